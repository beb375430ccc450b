"""Tatoeba English -> French (the d2l.ai tutorial's pair; 160,650 / 3,217 / 3,263 pairs by a hash of the English
sentence): a bidirectional GRU encoder, a 2-layer GRU decoder with Bahdanau (additive) attention, SentencePiece
unigram vocabularies of 8,000 per side (cased), dropout 0.2, label smoothing 0.1, beam 5.

  python -m s2s_jax.main --config=experiments/tatoeba/en_fr.py --workdir=/tmp/tatoeba_en_fr
  printf 'I love learning.\nThe weather is nice today.\n' | \
      python -m s2s_jax.translate --workdir=/tmp/tatoeba_en_fr --attention_dir=/tmp/tatoeba_att
Measured: README (test sacreBLEU and the two translations with their attention heatmaps).
"""

import ml_collections

from s2s_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  c = config_lib.base_config()
  c.data.update(
    name='tatoeba',
    source_lang='en',
    target_lang='fr',
    tokenizer='sentencepiece',
    spm_model_type='unigram',
    max_vocab_size=8_000,
    max_src_len=48,
    max_tgt_len=48,
    src_len_policy='filter',
    tgt_len_policy='filter',
    batch_size=64,
    batch_tokens=1_500,
    num_buckets=0,
    eval_batch_size=256,
  )
  c.model.update(
    cell='gru',
    num_layers=2,
    bidirectional=True,
    encoder_hidden_dim=256,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    embed_dim=256,
    hidden_dim=512,
    dropout_rate=0.2,
  )
  c.optim.update(
    optimizer='adam', learning_rate=1e-3, schedule='cosine', warmup_steps=500, grad_clip_norm=1.0, label_smoothing=0.1
  )
  c.decode.update(beam_size=5, length_alpha=1.0, max_len=48, batch_size=128)
  c.eval.update(metric='bleu', mode='max', scores='bleu,chrf', num_decode_examples=1_000)
  c.update(
    num_train_steps={'tiny': 20, 'small': 8_000, 'base': 30_000}[arg.size],
    log_every_steps=50,
    eval_every_steps=2_000,
    checkpoint_every_steps=1_000,
  )
  if arg.size == 'tiny':
    c.data.update(max_vocab_size=500, batch_tokens=0, num_buckets=2, max_src_len=24, max_tgt_len=24)
    c.model.update(embed_dim=16, hidden_dim=32, encoder_hidden_dim=16)
    config_lib.shrink_cadence_to_tiny(c)
    c.num_train_steps = 20
  return c
