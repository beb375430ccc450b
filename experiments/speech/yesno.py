"""Kaldi's yes/no corpus (60 recordings of eight words by one speaker) -> 'yes no ...': the smallest speech check.

40 log-mel bins, two stride-2 convolutions, a bidirectional GRU, a GRU decoder with Luong `general` attention, a
word vocabulary (yes, no), greedy decoding. The corpus has only train (the first 40 files) and test (the last 20):
evaluation during training is on train (model selection never sees test); WER and CER on test.
  python -m s2s_jax.main --config=experiments/speech/yesno.py --workdir=/tmp/yesno
Measured: README.
"""

import ml_collections

from s2s_jax import config_lib

_SIZES = {'tiny': (16, 32, 20), 'small': (32, 64, 600), 'base': (64, 128, 2_000)}  # embed, hidden, steps


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, steps = _SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name='yesno',
    tokenizer='word',
    num_mel_bins=40,
    max_src_len=720,
    max_tgt_len=10,
    src_len_policy='truncate',
    tgt_len_policy='filter',
    batch_size=8,
    eval_batch_size=40,
    eval_split='train',
    test_splits='test',
  )
  c.model.update(
    cell='gru',
    num_layers=1,
    bidirectional=True,
    frame_stride=4,
    bridge='dense',
    attention='luong',
    attention_score='general',
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
    dropout_rate=0.1,
    specaug_freq_width=6,
  )
  c.optim.update(optimizer='adam', learning_rate=2e-3, schedule='cosine', warmup_steps=50, grad_clip_norm=1.0)
  c.decode.update(beam_size=1, length_alpha=0.0, max_len=10, batch_size=40)
  c.eval.update(metric='wer', mode='min', scores='wer,exact_match', num_decode_examples=40)
  c.update(num_train_steps=steps, log_every_steps=50, eval_every_steps=200, checkpoint_every_steps=200)
  if arg.size == 'tiny':
    config_lib.shrink_cadence_to_tiny(c)
    c.data.update(batch_size=8, eval_batch_size=40)
    c.num_train_steps = steps
  return c
