"""Multi30k De->En, this project's strong recurrent model: SentencePiece subwords (unigram, 6,000 per side, cased),
a 2-layer bidirectional LSTM encoder (256 units per direction), a 2-layer LSTM decoder of 512 with Luong `general`
attention and input feeding, dropout 0.3, label smoothing 0.1, Adam 1e-3 with warmup and cosine decay, batches of
about 2,000 target tokens in length buckets, best checkpoint by validation BLEU, beam 5 with length penalty 1.0.

  python -m s2s_jax.main --config=experiments/multi30k/strong.py --workdir=/tmp/m30k_strong
  python -m s2s_jax.evaluate --workdir=/tmp/m30k_strong --split=test
Goal: >= 38 lowercased sacreBLEU on test2016 (an OpenNMT-py bidirectional-LSTM attention model reports 38.4
tokenised lowercased BLEU). Measured: README table. The run is resumable: stop it and run the same command again.
"""

import ml_collections

from s2s_jax import config_lib

_family = config_lib.import_beside(__file__, '_family.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  epochs = {'tiny': 1, 'small': 25, 'base': 40}[arg.size]
  c = _family.multi30k_config(arg.size, epochs=epochs, batch_size=64, tokenizer='sentencepiece', max_vocab_size=6_000)
  c.data.update(lowercase=False, spm_model_type='unigram', batch_tokens=2_000)
  c.model.update(
    cell='lstm',
    num_layers=2,
    bidirectional=True,
    encoder_hidden_dim=256,
    bridge='dense',
    attention='luong',
    attention_score='general',
    input_feeding=True,
    embed_dim=256,
    hidden_dim=512,
    dropout_rate=0.3,
  )
  c.optim.update(
    optimizer='adam', learning_rate=1e-3, schedule='cosine', warmup_steps=500, grad_clip_norm=1.0, label_smoothing=0.1
  )
  c.decode.update(beam_size=5, length_alpha=1.0, max_len=64, max_len_a=1.5, max_len_b=10)
  c.eval.update(metric='bleu', mode='max', scores='bleu,bleu_tok,chrf')
  c.update(eval_every_steps=500, checkpoint_every_steps=500)  # about 2 epochs of 246 token-budget batches
  if arg.size == 'tiny':
    c.data.update(max_vocab_size=500, batch_tokens=0)
    c.model.update(embed_dim=16, hidden_dim=32, encoder_hidden_dim=16)
    c.update(num_train_steps=20, eval_every_steps=20, checkpoint_every_steps=20)
  return c
