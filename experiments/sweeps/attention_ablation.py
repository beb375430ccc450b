"""Attention ablation on Multi30k De->En: no attention (context only initialises the decoder / joins every step)
against Bahdanau and Luong attention with several scores and input feeding.

  python scripts/sweep.py --sweep=experiments/sweeps/attention_ablation.py:size=small --root=/tmp/ablation
  python scripts/report.py --root=/tmp/ablation --baseline=attention=none_concat,context_to_output=true
`small`: 7 variants x 3 vmapped seeds (num_seeds of experiments/multi30k/ablation.py); `base`: every valid
combination of s2s_jax.attention.VALID_COMBINATIONS. Measured: README.
"""

from s2s_jax import attention
from s2s_jax import config_lib
from s2s_jax import sweep_lib

CONFIG = 'experiments/multi30k/ablation.py'


def _point(flow: str, score: str | None, feed: bool) -> dict:
  point = {'model.attention': flow}
  if flow == 'none_concat':
    point['model.context_to_output'] = True
  if score:
    point['model.attention_score'] = score
  if feed:
    point['model.input_feeding'] = True
  return point


def get_sweep(arg: str | None = None) -> list[dict]:
  size = config_lib.parse_arg(arg, size='small').size
  if size == 'base':
    return sweep_lib.points(*(_point(*c) for c in attention.VALID_COMBINATIONS))
  return sweep_lib.points(
    _point('none_init', None, False),
    _point('none_concat', None, False),
    _point('bahdanau', 'additive', False),
    _point('luong', 'dot', False),
    _point('luong', 'general', False),
    _point('luong', 'general', True),
    _point('luong', 'concat', False),
  )
