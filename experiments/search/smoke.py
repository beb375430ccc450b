"""A tiny search on the default task (dates -> ISO at size=tiny): 3 trials finish in a few minutes on a CPU.

  python scripts/tune.py --space=experiments/search/smoke.py --root=/tmp/tune_smoke --trials=3

`:force=1` (the slow test's) makes trial 1 fail (a config the run rejects) and trial 2 learn nothing (learning rate
0: its validation loss stays above trial 0's at the same step, so the median pruner stops it), to exercise both
paths.
"""

CONFIG = 'experiments/default.py'
CONFIG_ARG = 'size=tiny'
METRIC = 'eval/loss'
DIRECTION = 'minimize'
GRID = {'optim.learning_rate': [3e-3, 1e-2], 'model.hidden_dim': [32, 48]}
START = {'optim.learning_rate': 1e-2, 'model.hidden_dim': 48}  # trial 0


def suggest(trial, arg: str | None = None) -> dict:
  overrides = {
    'optim.learning_rate': trial.suggest_float('optim.learning_rate', 3e-3, 1e-2, log=True),
    'model.hidden_dim': trial.suggest_categorical('model.hidden_dim', [32, 48]),
    'num_train_steps': 40,
    'eval_every_steps': 10,
    'checkpoint_every_steps': 10,
  }
  if arg == 'force=1' and trial.number == 1:
    overrides['optim.warmup_steps'] = -1  # rejected by config validation: the run fails
  if arg == 'force=1' and trial.number == 2:  # learns nothing, and long enough to be pruned while it runs
    overrides.update({'optim.learning_rate': 0.0, 'num_train_steps': 2_000})
  return overrides
