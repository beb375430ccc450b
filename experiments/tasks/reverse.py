"""Generated task 'reverse': reverse the input sequence.

  python -m s2s_jax.main --config=experiments/tasks/reverse.py --workdir=/tmp/s2s_reverse
  python -m s2s_jax.main --config=experiments/tasks/reverse.py:size=tiny --workdir=/tmp/s2s_reverse_tiny
Expected: see the README's results table (test/exact_match).
"""

import ml_collections

from s2s_jax import config_lib

_family = config_lib.import_beside(__file__, '_family.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return _family.task_config('reverse', arg)
