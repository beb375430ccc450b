"""Hyperparameter search on Optuna: every trial is one s2s_jax.main run, launched like a sweep's runs; several drivers
(on several machines) may share one study.

  python scripts/tune.py --space=experiments/search/bahdanau.py --root=/tmp/tune --trials=8 [--parallel=2] \
      [--sampler=tpe|random|grid] [--pruner=median|halving|none] [--storage=URL [--study_name=NAME]] \
      [--executor=local|slurm ...]

A search file names its base experiment (`CONFIG`, optional `CONFIG_ARG`), the objective (`METRIC`, a validation
record of metrics.jsonl such as 'eval/bleu', and `DIRECTION`, 'maximize' or 'minimize') and `suggest(trial, arg)`
returning dotted config overrides from Optuna's trial.suggest_float / suggest_int / suggest_categorical; the grid
sampler also needs `GRID`, {parameter name: values}. `--space=FILE:arg` passes `arg` to suggest. An optional `START`,
{parameter name: value}, is the hand-set configuration the search starts from: a new study runs it as trial 0 (Optuna's
enqueue_trial), so the search's gain over it is measured in the study itself.

The study. Optuna holds it (trials, parameters, intermediate values) in --storage: SQLite in ROOT/study.db by default,
or any SQLAlchemy URL (e.g. PostgreSQL, which several machines reach). Its name is --study_name, or, on a root's first
run, `<root folder name>-<random id>`, kept in ROOT/study.json: two roots never meet in one storage by accident. The
study records its search (space, base config, metric, direction) and ROOT/study.json its study: a study name or root
reused with another search, or a root with another study name or storage, is refused before anything starts.
ROOT/study.json (read by scripts/report.py) shows the storage URL with its password hidden
(`postgresql://user:***@host/db`; PostgreSQL also reads the password from PGPASSWORD or ~/.pgpass, which keeps it off
the command line). A ROOT another user owns, or that every user may write, is refused.

Trials. Trial n runs in ROOT/trial_<n>/ (log ROOT/trial_<n>.log) through submitit, like scripts/sweep.py; it is sampled
with seed --sampler_seed + n, so drivers sharing a study do not propose the same points. The driver reports each running
trial's validation records (its metrics.jsonl) as intermediate values and stops a trial the pruner rejects, marking it
pruned: it writes ROOT/trial_<n>/STOP, which the run reads at its next validation wherever it runs (another host, a
SLURM job: the driver sends those no signal), and then checkpoints and exits (it is resumable); a run of the local
executor is also sent SIGTERM, which stops it after the current step. A run still going --stop_grace_s (600) seconds
later is killed (it resumes from its last checkpoint); the trial's user attribute 'stop' says which. A trial whose run
fails is marked failed with its log's last lines, and the search goes on. The objective of a finished trial is its best
validation value.

Several drivers. Drivers given the same --storage and --study_name, each with its own --root, on any machines, share the
study. --trials is the study's total: a driver asks no more trials once the study's trials that count (finished, running
or waiting) reach it, and ends once that many have finished; a trial two drivers asked at once for the last place is
withdrawn by the later one (user attribute 'surplus') and counts for nothing. Each running trial carries its driver's
record (host, pid, process start time, a heartbeat counter advanced at every poll; s2s_jax/shared_study.py). A driver
resumes a running trial only when that trial's driver is gone: a process of this host that died (a killed driver started
again resumes its trials at once), or a heartbeat counter that stood still for its expiry (5 minutes,
S2S_TUNE_EXPIRES_S: a driver on another machine takes them over then). The trial is failed (only one driver can) and
asked again as a new trial with the same parameters and overrides, counted in its place (its user attribute
'resumes_trial' names the first, whose folder name it keeps). It runs in the old workdir when that is reachable here (a
root of the same study), once the old run there has ended (a run still going is watched, and pruned, through its
workdir), so it resumes from the old checkpoint, or finishes at once when the old run finished; otherwise in this
driver's root, from the start. A trial finished or failed by another driver is no longer this driver's: its run is
stopped and the search goes on. Running the command again resumes the study: finished trials are kept.
"""

import importlib.util
import os
import sys

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # (its library modules, also when loaded by path)
# pylint: disable=g-import-not-at-top,wrong-import-position
import launch
import optuna
import tune_driver
import tune_study

from s2s_jax import redact

# pylint: enable=g-import-not-at-top,wrong-import-position

_SPACE = flags.DEFINE_string('space', None, 'Search file and optional arg: experiments/search/NAME.py[:arg].')
_TRIALS = flags.DEFINE_integer(
  'trials', 8, "Trials in the study in all, every driver's and earlier runs' (a resumed trial counts once)."
)
_SAMPLER = flags.DEFINE_enum('sampler', 'tpe', ['tpe', 'random', 'grid'], 'Optuna sampler.')
_PRUNER = flags.DEFINE_enum('pruner', 'median', ['median', 'halving', 'none'], 'Optuna pruner.')
_STORAGE = flags.DEFINE_string(
  'storage', None, 'Optuna storage URL (default: sqlite:///ROOT/study.db); stored and shown with its password hidden.'
)
_STUDY_NAME = flags.DEFINE_string(
  'study_name',
  None,
  'The study in --storage; drivers that share a study give the same name. Default: the one ROOT/study.json names, '
  'or on a new root <root folder name>-<random id>.',
)
_SEED = flags.DEFINE_integer('sampler_seed', 0, 'Seed of the sampler (trial n is sampled with this seed + n).')
_POLL_S = flags.DEFINE_float('poll_seconds', 5.0, 'How often running trials are read.')
flags.mark_flags_as_required(['space', 'root'])


def load_space(spec: str):
  """The search file's module and its arg; a clear error for a missing name."""
  path, _, arg = spec.partition(':')
  full = path if os.path.isabs(path) else os.path.join(_REPO, path)
  if not os.path.isfile(full):
    raise app.UsageError(f'--space: {full} does not exist.')
  module_spec = importlib.util.spec_from_file_location('search_space', full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  missing = [name for name in ('CONFIG', 'METRIC', 'DIRECTION', 'suggest') if not hasattr(module, name)]
  if missing:
    raise app.UsageError(
      f'{path} lacks {missing}: a search file defines CONFIG, METRIC, DIRECTION and suggest(trial, arg).'
    )
  if module.DIRECTION not in ('maximize', 'minimize'):
    raise app.UsageError(f"{path}: DIRECTION must be 'maximize' or 'minimize', got {module.DIRECTION!r}.")
  if not module.METRIC.startswith('eval/'):
    raise app.UsageError(f"{path}: METRIC must be a validation record ('eval/<metric>'), got {module.METRIC!r}.")
  return module, arg or getattr(module, 'CONFIG_ARG', '')


def check_metric(module) -> None:
  """Fails before any trial when the runs would never log METRIC (it must be one of eval.scores' metrics)."""
  from s2s_jax import config_checks  # pylint: disable=g-import-not-at-top
  from s2s_jax import config_lib  # pylint: disable=g-import-not-at-top

  path = module.CONFIG if os.path.isabs(module.CONFIG) else os.path.join(_REPO, module.CONFIG)
  config = config_lib.import_beside(path, os.path.basename(path)).get_config(getattr(module, 'CONFIG_ARG', '') or None)
  logged = config_checks.computed_metrics(config.eval.scores)
  name = module.METRIC[len('eval/') :]
  if name not in logged:
    raise app.UsageError(
      f'METRIC={module.METRIC!r} is never logged by {module.CONFIG} (its validation records: '
      f'{sorted("eval/" + m for m in logged)}); pick one of them or add its group to eval.scores.'
    )


def storage_url(root: str) -> str:
  return _STORAGE.value or f'sqlite:///{os.path.join(root, "study.db")}'


def make_sampler(module, seed: int) -> optuna.samplers.BaseSampler:
  if _SAMPLER.value == 'grid':
    if not hasattr(module, 'GRID'):
      raise app.UsageError('--sampler=grid needs GRID = {parameter: [values]} in the search file.')
    return tune_study.GridSampler(module.GRID, seed=seed)
  if _SAMPLER.value == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  return optuna.samplers.TPESampler(seed=seed)


def make_study(module, storage: str, name: str) -> optuna.Study:
  pruner = {
    'median': optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    'halving': optuna.pruners.SuccessiveHalvingPruner(),
    'none': optuna.pruners.NopPruner(),
  }[_PRUNER.value]
  try:
    return optuna.create_study(
      storage=storage,
      study_name=name,
      direction=module.DIRECTION,
      sampler=make_sampler(module, _SEED.value),
      pruner=pruner,
      load_if_exists=True,
    )
  except Exception as e:  # pylint: disable=broad-except  (any storage error: name it before a trial starts)
    message = redact.text(f'--storage={storage}: cannot open the study ({type(e).__name__}: {e}).', storage)
    raise app.UsageError(message) from None  # (no chained traceback: it would quote the password)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  module, arg = load_space(_SPACE.value)
  check_metric(module)
  root = launch.prepare_root(launch.ROOT.value)
  search, storage = tune_study.search_of(module, _SPACE.value), storage_url(root)
  name = tune_study.bind_root(root, search, storage, _STUDY_NAME.value)
  study = make_study(module, storage, name)
  tune_study.bind_study(study, search, storage)
  tune_study.write_study_json(root, search, storage, study.study_name)

  def sampler(n: int) -> optuna.samplers.BaseSampler:  # trial n's: seeded with --sampler_seed + n
    return make_sampler(module, _SEED.value + n)

  tune_driver.Driver(
    study, module, arg, root, storage, trials=_TRIALS.value, poll_s=_POLL_S.value, sampler=sampler
  ).run()


if __name__ == '__main__':
  app.run(main)
