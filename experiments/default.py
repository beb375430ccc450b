"""The default experiment: human-written dates (English and French, many formats) -> ISO 8601.

A bidirectional GRU encoder and a Bahdanau-attention GRU decoder (additive score), character vocabularies.

  python -m s2s_jax.main --config=experiments/default.py --workdir=/tmp/s2s_default
Expected: test/exact_match >= 99 on the 2,000 test dates (dates never seen in training) in about half a minute on a
2-core CPU; measured numbers are in the README's results table. `small` trains 400 steps of 64 (half an epoch of
the 50,000 training dates) and evaluates once, at the end: at 300 steps seeds 0-2 reached 99.35-99.75, at 400 steps
99.9 each.
"""

import ml_collections

from s2s_jax import config_lib

# embed, hidden, train examples, eval examples, steps, evaluation (and checkpoint) every
_SIZES = {
  'tiny': (16, 32, 2_000, 200, 40, 20),
  'small': (32, 128, 50_000, 2_000, 400, 400),
  'base': (64, 256, 50_000, 2_000, 5_000, 500),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, num_train, num_eval, steps, eval_every = _SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name='dates',
    tokenizer='char',
    num_train_examples=num_train,
    num_eval_examples=num_eval,
    max_src_len=48,
    max_tgt_len=12,
    batch_size=64,
    eval_batch_size=512,
  )
  c.model.update(
    cell='gru',
    num_layers=1,
    bidirectional=True,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
  )
  c.optim.update(optimizer='adam', learning_rate=3e-3, schedule='cosine', warmup_steps=100, grad_clip_norm=1.0)
  c.decode.update(beam_size=1, length_alpha=0.0)
  c.eval.update(metric='exact_match', mode='max', num_decode_examples=512)
  c.num_train_steps = steps
  c.log_every_steps = 100
  c.eval_every_steps = eval_every
  c.checkpoint_every_steps = eval_every
  if arg.size == 'tiny':
    config_lib.shrink_cadence_to_tiny(c)
  return c
