"""Hyperparameter search on Optuna: every trial is one s2s_jax.main run, launched like a sweep's runs.

  python scripts/tune.py --space=experiments/search/bahdanau.py --root=/tmp/tune --trials=8 [--parallel=2] \
      [--sampler=tpe|random|grid] [--pruner=median|halving|none] [--storage=URL] [--executor=local|slurm ...]

A search file names its base experiment (`CONFIG`, optional `CONFIG_ARG`), the objective (`METRIC`, a validation
record of metrics.jsonl such as 'eval/bleu', and `DIRECTION`, 'maximize' or 'minimize') and `suggest(trial, arg)`
returning dotted config overrides from Optuna's trial.suggest_float / suggest_int / suggest_categorical; the grid
sampler also needs `GRID`, {parameter name: values}. `--space=FILE:arg` passes `arg` to suggest. An optional `START`,
{parameter name: value}, is the hand-set configuration the search starts from: a new study runs it as trial 0 (Optuna's
enqueue_trial), so the search's gain over it is measured in the study itself.

Optuna holds the study (sampler, pruner, trial bookkeeping) in `--storage`: SQLite in ROOT/study.db by default, or
any SQLAlchemy URL (several drivers on several machines share one study through e.g. PostgreSQL). Trial n runs in
ROOT/trial_<n>/ (log ROOT/trial_<n>.log) through submitit, like scripts/sweep.py. The driver asks for trials, reads
each running trial's validation records from its metrics.jsonl, reports them as intermediate values and stops a
trial the pruner rejects with SIGTERM (the run checkpoints and exits: it is resumable), marking it pruned; a run
still going --stop_grace_s (600) seconds later is killed (it resumes from its last checkpoint), and the trial's
user attribute 'stop' says which. A trial whose run fails is marked failed with its log's last lines, and the search
goes on. The objective of a finished trial is its best validation value. Re-running the command resumes the study:
finished trials are kept; trials a killed driver left running are marked failed and asked again with their
parameters, in their old workdir, so their runs resume from their checkpoints. ROOT/study.json records the search for
scripts/report.py, the storage URL with its password hidden (`postgresql://user:***@host/db`; PostgreSQL also reads
the password from PGPASSWORD or ~/.pgpass, which keeps it off the command line). A ROOT another user owns, or that
every user may write, is refused.
"""

import contextlib
import importlib.util
import json
import math
import os
import signal
import sys
import time

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
import launch
import optuna
from s2s_jax import fileio
from s2s_jax import redact
from s2s_jax import sweep_lib
from s2s_jax import workdir as workdir_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_SPACE = flags.DEFINE_string('space', None, 'Search file and optional arg: experiments/search/NAME.py[:arg].')
_TRIALS = flags.DEFINE_integer('trials', 8, 'Trials in the study in all (finished ones of earlier runs count).')
_SAMPLER = flags.DEFINE_enum('sampler', 'tpe', ['tpe', 'random', 'grid'], 'Optuna sampler.')
_PRUNER = flags.DEFINE_enum('pruner', 'median', ['median', 'halving', 'none'], 'Optuna pruner.')
_STORAGE = flags.DEFINE_string(
  'storage', None, 'Optuna storage URL (default: sqlite:///ROOT/study.db); stored and shown with its password hidden.'
)
_SEED = flags.DEFINE_integer('sampler_seed', 0, 'Seed of the sampler.')
_POLL_S = flags.DEFINE_float('poll_seconds', 5.0, 'How often running trials are read.')
flags.mark_flags_as_required(['space', 'root'])

_RESUMES = 'resumes_trial'  # user attribute: the trial number whose workdir a re-asked trial continues
_JOB_MARGIN_S = 30.0  # a run stopped through its job is killed by the job after --stop_grace_s; this long more


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
  groups = [g for g in config.eval.scores.split(',') if g]
  logged = {'loss', 'perplexity', 'token_accuracy'}.union(*(config_checks.SCORE_GROUPS[g] for g in groups))
  name = module.METRIC[len('eval/') :]
  if name not in logged:
    raise app.UsageError(
      f'METRIC={module.METRIC!r} is never logged by {module.CONFIG} (its validation records: '
      f'{sorted("eval/" + m for m in logged)}); pick one of them or add its group to eval.scores.'
    )


def storage_url(root: str) -> str:
  return _STORAGE.value or f'sqlite:///{os.path.join(root, "study.db")}'


def make_study(module, root: str) -> optuna.Study:
  storage = storage_url(root)
  if _SAMPLER.value == 'grid':
    if not hasattr(module, 'GRID'):
      raise app.UsageError('--sampler=grid needs GRID = {parameter: [values]} in the search file.')
    sampler = optuna.samplers.GridSampler(module.GRID, seed=_SEED.value)
  elif _SAMPLER.value == 'random':
    sampler = optuna.samplers.RandomSampler(seed=_SEED.value)
  else:
    sampler = optuna.samplers.TPESampler(seed=_SEED.value)
  pruner = {
    'median': optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    'halving': optuna.pruners.SuccessiveHalvingPruner(),
    'none': optuna.pruners.NopPruner(),
  }[_PRUNER.value]
  try:
    return optuna.create_study(
      storage=storage,
      study_name=os.path.basename(root.rstrip('/')) or 'study',
      direction=module.DIRECTION,
      sampler=sampler,
      pruner=pruner,
      load_if_exists=True,
    )
  except Exception as e:  # pylint: disable=broad-except  (any storage error: name it before a trial starts)
    message = redact.text(f'--storage={storage}: cannot open the study ({type(e).__name__}: {e}).', storage)
    raise app.UsageError(message) from None  # (no chained traceback: it would quote the password)


def validation_records(workdir: str, metric: str) -> list[tuple[int, float]]:
  """(step, value) of every validation record of `metric` written so far (a torn last line is skipped)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  out = []
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue
        if isinstance(record.get(metric), (int, float)) and math.isfinite(record[metric]):
          out.append((int(record['step']), float(record[metric])))
  return out


def _last_step(workdir: str) -> float:
  """The run's num_train_steps from its config.json (written once the data are ready); inf before that."""
  try:
    with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
      return int(json.load(f)['num_train_steps'])
  except (OSError, ValueError, KeyError, TypeError):
    return math.inf


def write_study_json(root: str, module, storage: str, study_name: str) -> None:
  """ROOT/study.json, what scripts/report.py reads: the search and where its study is (the password hidden)."""
  fileio.write_json(
    os.path.join(root, 'study.json'),
    {
      'space': _SPACE.value,
      'config': module.CONFIG,
      'metric': module.METRIC,
      'direction': module.DIRECTION,
      'storage': redact.url(storage),
      'study_name': study_name,
    },
    indent=2,
  )


def stop_run(workdir: str, job, grace_s: float, poll_s: float = 0.5) -> str:
  """Stops a pruned trial's run (it checkpoints and exits) and waits for it, bounded: SIGTERM to the training process
  through the workdir lock on this host (and pid namespace and boot: a container sharing the host name has other
  pids), else to the job (a local job's controller passes it on to run_one, which passes it on to the run and kills
  it after its grace; SLURM's cancel signals the job's processes). A run still going after grace_s (plus
  _JOB_MARGIN_S when stopped through its job) is killed. Returns what happened, for the trial's record."""
  holder = workdir_lib.lock_holder(workdir)
  pid = int(holder['pid']) if holder and workdir_lib.pid_is_local(holder) else None
  if pid is not None:
    try:
      os.kill(pid, signal.SIGTERM)
    except OSError:
      pid = None
  if pid is None:
    process = getattr(job, '_process', None)  # a local job's controller (submitit's LocalJob)
    if process is not None:
      process.send_signal(signal.SIGTERM)  # (its cancel() sends SIGINT: the controller then kills run_one in 1 s)
    else:
      job.cancel(check=False)
  start = time.monotonic()
  limit = grace_s + (0.0 if pid else _JOB_MARGIN_S)
  while not job.done() and time.monotonic() - start < limit:
    time.sleep(poll_s)
  if job.done():
    return f'stopped after {time.monotonic() - start:.0f} s'
  holder = workdir_lib.lock_holder(workdir)
  if pid and holder and int(holder.get('pid', -1)) == pid:  # (still the same process: its pid was not reused)
    with contextlib.suppress(OSError):
      os.kill(pid, signal.SIGKILL)
  job.cancel(check=False)
  return f'killed: still running {limit:g} s after SIGTERM'


def _tail(path: str, lines: int = 12) -> str:
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def resume_interrupted(study: optuna.Study) -> int:
  """Trials left RUNNING by a killed driver: marked failed and asked again with the same parameters (their runs
  resume in the old workdir). A running trial whose workdir is held by a live run (a driver on another machine
  sharing the study) is left alone. Returns how many were resumed."""
  stale = [
    t
    for t in study.get_trials(deepcopy=False)
    if t.state == optuna.trial.TrialState.RUNNING
    and not (t.user_attrs.get('workdir') and workdir_lib.lock_holder(t.user_attrs['workdir']))
  ]
  for t in stale:
    study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(t.params, user_attrs={_RESUMES: t.user_attrs.get(_RESUMES, t.number)})
  return len(stale)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  module, arg = load_space(_SPACE.value)
  check_metric(module)
  root = launch.prepare_root(launch.ROOT.value)
  study = make_study(module, root)
  if getattr(module, 'START', None) and not study.get_trials(deepcopy=False):
    study.enqueue_trial(dict(module.START), user_attrs={'start': True})
  resumed = resume_interrupted(study)
  write_study_json(root, module, storage_url(root), study.study_name)
  config_arg = getattr(module, 'CONFIG_ARG', '')
  config_flag = f'--config={module.CONFIG}' + (f':{config_arg}' if config_arg else '')
  executor = launch.executor(root)
  active = {}  # trial number -> (trial, job, workdir, log, reported steps)
  counted = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not _superseded(study, t)}
  print(
    f'Study {study.study_name}: {len(counted)} finished trial(s), {resumed} interrupted one(s) to resume, '
    f'{_TRIALS.value} in all.',
    flush=True,
  )
  while len(counted) + len(active) < _TRIALS.value or active:
    while len(counted) + len(active) < _TRIALS.value and (
      len(active) < launch.PARALLEL.value or launch.EXECUTOR.value == 'slurm'
    ):
      trial = study.ask()
      overrides = module.suggest(trial, arg or None)
      number = trial.user_attrs.get(_RESUMES, trial.number)
      workdir, log = os.path.join(root, f'trial_{number}'), os.path.join(root, f'trial_{number}.log')
      trial.set_user_attr('workdir', workdir)
      trial.set_user_attr('overrides', {k: v for k, v in overrides.items()})
      cmd = [
        sys.executable,
        '-m',
        's2s_jax.main',
        config_flag,
        f'--workdir={workdir}',
        launch.cache_flag(),
        *sweep_lib.override_flags(overrides),
      ]
      trial.set_user_attr('command', ' '.join(cmd[1:]))
      job = executor.submit(launch.run_job, cmd, log, launch.STOP_GRACE_S.value)
      active[trial.number] = (trial, job, workdir, log, set(), time.time())
      print(f'trial {trial.number}: {workdir} {overrides}', flush=True)
    time.sleep(_POLL_S.value)
    for number, (trial, job, workdir, log, reported, start) in list(active.items()):
      pruned = False
      for step, value in validation_records(workdir, module.METRIC):
        if step not in reported:
          reported.add(step)
          trial.report(value, step)
          if not job.done() and step < _last_step(workdir) and trial.should_prune():
            pruned = True  # (never at the last step: that value is final, only the test decode is left)
      if pruned:
        stop = stop_run(workdir, job, launch.STOP_GRACE_S.value)  # the run checkpoints and exits (or is killed)
        trial.set_user_attr('wall_s', time.time() - start)
        trial.set_user_attr('stop', stop)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        print(f'trial {number}: pruned at step {max(reported)}, its run {stop} (resumable: {workdir})', flush=True)
      elif job.done():
        code = launch.outcome(job)  # (a failed job must not stop the search)
        trial.set_user_attr('wall_s', time.time() - start)
        values = [v for _, v in validation_records(workdir, module.METRIC)]
        if code == 0 and os.path.exists(os.path.join(workdir, 'DONE')) and values:
          best = max(values) if module.DIRECTION == 'maximize' else min(values)
          study.tell(trial, best)
          print(f'trial {number}: {module.METRIC}={best:.4g}', flush=True)
        else:
          trial.set_user_attr('error', _tail(log))
          study.tell(trial, state=optuna.trial.TrialState.FAIL)
          print(f'trial {number}: FAILED ({code}); last lines of {log}:\n{_tail(log)}', flush=True)
      else:
        continue
      del active[number]
      counted.add(number)
  best = study.best_trial if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) else None
  if best is not None:
    print(
      f'Best trial {best.number}: {module.METRIC}={best.value:.4g} {best.params}\n  {best.user_attrs.get("command")}'
    )


def _superseded(study: optuna.Study, trial) -> bool:
  """A failed trial that was asked again (resumed) does not count towards --trials."""
  return trial.state == optuna.trial.TrialState.FAIL and any(
    t.user_attrs.get(_RESUMES) == trial.number for t in study.get_trials(deepcopy=False)
  )


if __name__ == '__main__':
  app.run(main)
