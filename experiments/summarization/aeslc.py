"""AESLC email -> subject line (Zhang and Tetreault 2019) with a pointer-generator and coverage (See et al. 2017).

A bidirectional LSTM encoder over the email body (cut to `max_src_len` subword tokens: long inputs are truncated
and counted in data_report.json), an LSTM decoder with Bahdanau (additive) attention, a copy switch over one
SentencePiece vocabulary shared by bodies and subjects, coverage in the score and in the loss; beam search with a
minimum length and trigram blocking. Best checkpoint by validation ROUGE-L (the email's own subject line); the test
split (AESLC's dev set) is scored against its three annotated subject lines.

  python -m s2s_jax.main --config=experiments/summarization/aeslc.py --workdir=/tmp/aeslc
  python scripts/lead_baseline.py --config=experiments/summarization/aeslc.py --split=test --json=/tmp/lead.json
Measured: README (ROUGE of the model and of the lead baselines, scored by the same code).
"""

import ml_collections

from s2s_jax import config_lib

# embed, hidden (decoder; encoder: hidden / 2 per direction), vocabulary, source tokens, steps
_SIZES = {'tiny': (16, 32, 0, 48, 20), 'small': (128, 256, 8_000, 128, 1_500), 'base': (256, 512, 16_000, 256, 20_000)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, vocab_size, src_len, steps = _SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name='aeslc',
    source_lang='en',
    target_lang='en',
    tokenizer='sentencepiece',
    spm_model_type='unigram',
    max_vocab_size=vocab_size,
    shared_vocab=True,
    max_src_len=src_len,
    max_tgt_len=24,
    src_len_policy='truncate',
    tgt_len_policy='truncate',
    batch_size=64,
    eval_batch_size=128,
    num_buckets=0,
    max_padding=0.15,
  )  # 0.10 needs 32 shapes (compiles) here, 0.15 about 12
  c.model.update(
    cell='lstm',
    num_layers=1,
    bidirectional=True,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    pointer_generator=True,
    coverage=True,
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
    dropout_rate=0.2,
  )
  c.optim.update(
    optimizer='adam',
    learning_rate=1e-3,
    schedule='cosine',
    warmup_steps=200,
    grad_clip_norm=2.0,
    coverage_loss_weight=1.0,
  )
  c.decode.update(beam_size=4, length_alpha=1.0, max_len=24, min_len=2, no_repeat_ngram_size=3, batch_size=128)
  c.eval.update(metric='rougeL', mode='max', scores='rouge', num_decode_examples=512)
  c.update(num_train_steps=steps, log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=500)
  if arg.size == 'tiny':  # a word vocabulary: training SentencePiece on every email would not fit a tiny run
    c.data.update(tokenizer='word', max_vocab_size=2_000, batch_size=16, eval_batch_size=64, num_buckets=2)
    config_lib.shrink_cadence_to_tiny(c)
    c.num_train_steps = steps
  return c
