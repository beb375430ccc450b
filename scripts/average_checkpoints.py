"""Checkpoint averaging: the element-wise mean of a run's saved parameters, written as a checkpoint of its own.

  python scripts/average_checkpoints.py --workdir=DIR --last=5 [--output=DIR/averaged]
  python scripts/average_checkpoints.py --workdir=DIR --steps=4000,4500,5000
  python -m s2s_jax.evaluate --workdir=DIR --split=test --checkpoint=averaged

The steps are those kept in DIR/checkpoints/ and DIR/best/ (train with a larger --config.keep_checkpoints to keep
more); the output folder is read by every command of the project with --checkpoint=<folder> (a path relative to
the workdir, or absolute), and records the averaged steps in <folder>/average.json. The evaluate command above
writes DIR/eval_test.averaged.json (the tag is the folder's name; the run's own eval_test.json stays) and records
the averaged steps in it. Without writing anything, translate and evaluate also take --checkpoint=avg:K
(evaluate then writes eval_test.avg<K>.json).
"""

import os
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import checkpointing
from s2s_jax import fileio

# pylint: enable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run directory written by s2s_jax.main.')
_LAST = flags.DEFINE_integer('last', None, 'Average the last K saved steps.')
_STEPS = flags.DEFINE_list('steps', None, 'Average these saved steps.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where to write the average (default: WORKDIR/averaged).')
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if (_LAST.value is None) == (_STEPS.value is None):
    raise app.UsageError('Give either --last=K or --steps=S1,S2,...')
  spec = str(_LAST.value) if _LAST.value is not None else ','.join(_STEPS.value)
  try:
    params, step = checkpointing.average_params(_WORKDIR.value, spec)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  output = _OUTPUT.value or os.path.join(_WORKDIR.value, 'averaged')
  if os.path.exists(output) and os.listdir(output):
    raise app.UsageError(f'{output} exists and is not empty; remove it or choose another --output.')
  checkpointing.save_params(output, step, params)
  averaged = checkpointing.averaged_steps(_WORKDIR.value, f'avg:{spec}')
  record = {'workdir': os.path.abspath(_WORKDIR.value), 'steps': averaged}
  fileio.write_json(os.path.join(output, checkpointing.AVERAGE_RECORD), record, indent=2)
  print(f'Averaged steps {spec} of {_WORKDIR.value} into {output} (step {step}).')


if __name__ == '__main__':
  app.run(main)
