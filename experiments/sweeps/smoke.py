"""A tiny sweep that exercises sweep.py and report.py end to end: Bahdanau attention vs a fixed context on dates.

python scripts/sweep.py --sweep=experiments/sweeps/smoke.py --root=/tmp/smoke
python scripts/report.py --root=/tmp/smoke --baseline=attention=none_concat
"""

from s2s_jax import sweep_lib

CONFIG = 'experiments/default.py'
CONFIG_ARG = 'size=tiny'  # used when --sweep gives no ':arg'


def get_sweep(arg: str | None = None) -> list[dict]:
  del arg  # always tiny
  return sweep_lib.product(
    sweep_lib.points({'model.attention': 'bahdanau'}, {'model.attention': 'none_concat'}),
    sweep_lib.points({'num_train_steps': 40}),
  )
