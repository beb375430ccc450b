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

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
import launch
import optuna
import psutil
from s2s_jax import fileio
from s2s_jax import preemption
from s2s_jax import redact
from s2s_jax import shared_study
from s2s_jax import sweep_lib
from s2s_jax import workdir_lock
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

_JOB_MARGIN_S = 30.0  # a run told to stop through its workdir or its job gets this long more than --stop_grace_s
_SEARCH_KEYS = ('space', 'config', 'config_arg', 'metric', 'direction')  # what a study and a root are bound to
_RUNNING_SLURM_STATES = {'RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'STOPPED', 'SIGNALING', 'STAGE_OUT'}
_PENDING_SLURM_STATES = {'PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESV_DEL_HOLD'}


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


def space_key(spec: str) -> str:
  """--space as a study records it: the file relative to the repository when inside it (two checkouts agree), else
  its absolute path, with its arg."""
  path, sep, arg = spec.partition(':')
  full, repo = os.path.realpath(path if os.path.isabs(path) else os.path.join(_REPO, path)), os.path.realpath(_REPO)
  return (os.path.relpath(full, repo) if full.startswith(repo + os.sep) else full) + sep + arg


def search_of(module, spec: str) -> dict[str, str]:
  """What a study and a root are bound to: the search file with its arg, the base config, the metric, the direction."""
  return {
    'space': space_key(spec),
    'config': module.CONFIG,
    'config_arg': getattr(module, 'CONFIG_ARG', ''),
    'metric': module.METRIC,
    'direction': module.DIRECTION,
  }


def _differences(old: dict, new: dict) -> str:
  keys = [k for k in _SEARCH_KEYS if k in old and k in new and old[k] != new[k]]
  return ', '.join(f'{k} {old[k]!r} (this command: {new[k]!r})' for k in keys)


def read_root(root: str) -> dict | None:
  """ROOT/study.json, or None for a new root."""
  try:
    with open(os.path.join(root, 'study.json'), encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    raise app.UsageError(f'{root}/study.json is not JSON ({e}); move it away or use another --root.') from None


def bind_root(root: str, search: dict, storage: str) -> str:
  """The study's name for this root; refuses a root that holds another search, another study or another storage."""
  info = read_root(root)
  if info is None:
    return _STUDY_NAME.value or f'{os.path.basename(root.rstrip("/")) or "study"}-{os.urandom(4).hex()}'
  if differences := _differences(dict(info, space=space_key(info.get('space', ''))), search):
    raise app.UsageError(
      f'--root={root} holds a search with {differences}; a root keeps one search: use another --root.'
    )
  if _STUDY_NAME.value and _STUDY_NAME.value != info.get('study_name'):
    raise app.UsageError(
      f'--root={root} belongs to study {info.get("study_name")!r}, not {_STUDY_NAME.value!r}: pass '
      f'--study_name={info.get("study_name")} or use another --root.'
    )
  if info.get('storage') not in (None, redact.url(storage)):
    raise app.UsageError(
      f'--root={root} belongs to study {info.get("study_name")!r} in {info["storage"]}, not in {redact.url(storage)}: '
      'give that --storage or use another --root.'
    )
  return info['study_name']


class _GridSampler(optuna.samplers.GridSampler):
  """Optuna's grid sampler without its study.stop() once the grid is covered: outside Study.optimize that raises
  RuntimeError in the tell of the last grid point (the driver crashed there); --trials ends the search."""

  def after_trial(self, study, trial, state, values) -> None:
    del study, trial, state, values


def make_sampler(module, seed: int) -> optuna.samplers.BaseSampler:
  if _SAMPLER.value == 'grid':
    if not hasattr(module, 'GRID'):
      raise app.UsageError('--sampler=grid needs GRID = {parameter: [values]} in the search file.')
    return _GridSampler(module.GRID, seed=seed)
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


def bind_study(study: optuna.Study, search: dict, storage: str) -> None:
  """Records the search in a new study (user attribute 'search'); refuses a study of another search or direction.
  Two drivers creating the study at once both write and read back: the one whose search lost refuses."""
  direction = study.direction.name.lower()
  if direction != search['direction']:
    raise app.UsageError(
      f'Study {study.study_name!r} in {redact.url(storage)} was created to {direction} its objective, and this '
      f'search would {search["direction"]} {search["metric"]}: use another --study_name (or --root).'
    )
  if 'search' not in study.user_attrs:
    study.set_user_attr('search', search)
  stored = study.user_attrs['search']
  if differences := _differences(stored, search):
    raise app.UsageError(
      f'Study {study.study_name!r} holds a search with {differences}; a study keeps one search: use another '
      '--study_name (or --root).'
    )


def write_study_json(root: str, search: dict, storage: str, study_name: str) -> None:
  """ROOT/study.json, what scripts/report.py reads: the search and where its study is (the password hidden)."""
  fileio.write_json(
    os.path.join(root, 'study.json'),
    {**search, 'storage': redact.url(storage), 'study_name': study_name},
    indent=2,
  )


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


def stop_request(workdir: str, job, reason: str, signal_ok: bool) -> dict[str, Any]:
  """Asks a run to stop (it checkpoints and exits: it is resumable); returns the request, for stop_progress.

  DIR/STOP, which the run reads at each validation, reaches it wherever it runs (another host, a SLURM job). Where
  the run is a process of this host that this driver may signal (signal_ok: the local executor), SIGTERM stops it
  sooner, after its current step: through the workdir lock's pid, else through its job's controller, which passes
  it on (submitit's cancel() would send SIGINT, on which the controller kills the job in 1 s)."""
  os.makedirs(workdir, exist_ok=True)  # (a run not started yet stops at its first validation)
  fileio.write_text(os.path.join(workdir, preemption.STOP_FILE), f'{reason}\n')
  pid, holder = None, workdir_lock.lock_holder(workdir) if signal_ok else None
  if holder and shared_study.pid_is_local(holder) and not shared_study.dead_reason(holder):
    try:
      os.kill(int(holder['pid']), signal.SIGTERM)
      pid = int(holder['pid'])
    except OSError:
      pass
  if pid is None and signal_ok and getattr(job, '_process', None) is not None:
    job._process.send_signal(signal.SIGTERM)  # pylint: disable=protected-access  (a local job's controller)
  limit = launch.STOP_GRACE_S.value + (0.0 if pid else _JOB_MARGIN_S)
  return {'since': time.monotonic(), 'limit': limit, 'pid': pid}


def stop_progress(request: dict[str, Any], workdir: str, ended: bool, cancel) -> str | None:
  """None while a stopped run may still stop by itself; then what happened, for the trial's record, and the STOP file
  is removed. A run going on past the request's limit is killed: SIGKILL to the pid that was signalled (if it still
  holds the workdir), and cancel() (its job's)."""
  elapsed = time.monotonic() - request['since']
  if ended:
    outcome = f'stopped after {elapsed:.0f} s'
  elif elapsed < request['limit']:
    return None
  else:
    holder = workdir_lock.lock_holder(workdir)
    if request['pid'] and holder and int(holder.get('pid', -1)) == request['pid']:  # (not a reused pid)
      with contextlib.suppress(OSError):
        os.kill(request['pid'], signal.SIGKILL)
    cancel()
    outcome = f'killed: still running {request["limit"]:g} s after the stop request'
  with contextlib.suppress(FileNotFoundError):  # (unread when a signal stopped the run: a rerun must not stop)
    os.remove(os.path.join(workdir, preemption.STOP_FILE))
  return outcome


def _slurm_job_running(job_id: str) -> bool:
  """Whether SLURM still runs job `job_id` (squeue); a job still pending is cancelled first: its run never started,
  and a resumed trial must not meet it in its workdir."""
  try:
    state = subprocess.run(
      ['squeue', '-h', '-j', str(job_id), '-o', '%T'], capture_output=True, text=True, timeout=60, check=False
    ).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    return False  # (no SLURM here: the job belongs to another cluster; the workdir lock still counts)
  if state in _PENDING_SLURM_STATES:
    subprocess.run(['scancel', str(job_id)], capture_output=True, timeout=60, check=False)
    print(f'SLURM job {job_id} of a gone driver was still {state}: cancelled.', flush=True)
    return False
  return state in _RUNNING_SLURM_STATES


@dataclasses.dataclass
class _Run:
  """A trial this driver runs: its run's workdir, its job (None while an older run in the workdir is waited for)."""

  trial: optuna.Trial
  slot: int
  workdir: str
  overrides: dict
  previous: dict | None = None  # the job of a gone driver's run in this workdir
  job: Any = None
  cmd: list = dataclasses.field(default_factory=list)
  start: float = dataclasses.field(default_factory=time.time)
  reported: set = dataclasses.field(default_factory=set)
  stop: dict | None = None  # a stop in progress (stop_request)
  why: str = ''  # what the stop is for

  @property
  def number(self) -> int:
    return self.trial.number

  @property
  def log(self) -> str:
    return os.path.join(os.path.dirname(self.workdir), f'trial_{self.slot}.log')


class Driver:
  """Runs trials of the study until it has --trials finished ones (see the module's docstring)."""

  def __init__(self, study: optuna.Study, module, arg: str, root: str, storage: str):
    self.study, self.module, self.arg, self.root, self.storage = study, module, arg, root, storage
    self.me = shared_study.driver_record(root, _POLL_S.value)
    self.watch = shared_study.OwnerWatch(self.me)
    self.runs: dict[int, _Run] = {}  # trial number -> run
    self.detached: list[_Run] = []  # runs of trials no longer this driver's, being stopped
    self.local = launch.EXECUTOR.value == 'local'
    self.executor = launch.executor(root)
    config_arg = getattr(module, 'CONFIG_ARG', '')
    self.config_flag = f'--config={module.CONFIG}' + (f':{config_arg}' if config_arg else '')

  def tally(self) -> shared_study.Tally:
    return shared_study.tally(self.study.get_trials(deepcopy=False))

  def has_room(self) -> bool:
    return not self.local or len(self.runs) < launch.PARALLEL.value

  def run(self) -> None:
    tally, waiting_noted = self.tally(), False
    print(
      f'Study {self.study.study_name}: {tally.finished} finished trial(s), {tally.in_flight} in flight, '
      f'{_TRIALS.value} in all; this driver is {shared_study.describe(self.me)}.',
      flush=True,
    )
    while True:
      tally = self.tally()
      self.check_own(tally)
      if self.take_orphans(tally):
        tally = self.tally()
      while self.has_room() and (tally.waiting or tally.finished + tally.in_flight < _TRIALS.value):
        self.ask()
        tally = self.tally()
      if not self.runs and not self.detached:
        if tally.finished >= _TRIALS.value:
          break
        if not waiting_noted:
          print(f'Waiting: {tally.in_flight} trial(s) run by other drivers.', flush=True)
          waiting_noted = True
      self.beat()
      time.sleep(_POLL_S.value)
      for run in list(self.runs.values()):
        self.poll(run)
      for run in list(self.detached):
        self.poll_detached(run)
    complete = [t for t in self.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
      best = self.study.best_trial
      print(
        f'Best trial {best.number}: {self.module.METRIC}={best.value:.4g} {best.params}\n'
        f'  {best.user_attrs.get("command")}'
      )

  # -- the study's trials

  def ask(self) -> None:
    """A new trial (or a waiting one that older code enqueued); withdrawn at once when the study already has its
    --trials (another driver asked for the last place first)."""
    predicted = len(self.study.get_trials(deepcopy=False))
    self.study.sampler = make_sampler(self.module, _SEED.value + predicted)
    if predicted == 0 and getattr(self.module, 'START', None):  # the hand-set configuration the search starts from
      self.study.enqueue_trial(dict(self.module.START), user_attrs={'start': True})  # (asked next, as trial 0)
    trial = self.study.ask()
    trial.set_user_attr(shared_study.DRIVER, self.me)
    if trial.number != predicted and _SAMPLER.value != 'grid':
      self.study.sampler = make_sampler(self.module, _SEED.value + trial.number)  # (used by suggest)
    slot = int(trial.user_attrs.get(shared_study.RESUMES, trial.number))
    if self.tally().rank(slot) >= _TRIALS.value:
      trial.set_user_attr(shared_study.SURPLUS, True)
      self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
      print(f"trial {trial.number}: withdrawn, another driver took the study's last place.", flush=True)
      return
    overrides = self.module.suggest(trial, self.arg or None)
    self.launch(_Run(trial, slot, os.path.join(self.root, f'trial_{slot}'), dict(overrides)))

  def take_orphans(self, tally: shared_study.Tally) -> bool:
    """Resumes the running trials whose driver is gone (while this driver has room); fails gone drivers' running
    trials that count for nothing (withdrawn ones). Returns whether anything changed."""
    changed = False
    for t in [t for ts in tally.slots.values() for t in ts]:
      if t.state != optuna.trial.TrialState.RUNNING or t.number in self.runs:
        continue
      reason = self.watch.gone(t)  # (every poll, so that another host's heartbeat counter is watched from now)
      if reason is None:
        continue
      counts = shared_study.slot(t) in tally.counted and tally.is_current(t)
      if counts and not self.has_room():
        continue
      try:  # the claim: the storage finishes a trial once, so only one driver resumes it
        self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)
      except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        continue  # finished meanwhile, or claimed by another driver
      changed = True
      if counts:
        self.resume(t, reason)
    return changed

  def resume(self, old: optuna.trial.FrozenTrial, reason: str) -> None:
    """Asks again trial `old` (failed, its driver gone) as a new trial of this driver with the same parameters and
    overrides: in the old workdir when it is reachable from here, else in this root."""
    slot = shared_study.slot(old)
    workdir = old.user_attrs.get('workdir') or ''
    reuse = bool(workdir) and self.same_study_root(os.path.dirname(workdir))
    if not reuse:
      workdir = os.path.join(self.root, f'trial_{slot}')
    template = optuna.trial.create_trial(
      state=optuna.trial.TrialState.RUNNING,
      params=old.params,
      distributions=old.distributions,
      system_attrs=dict(old.system_attrs),  # (the grid sampler's point, fixed parameters)
      user_attrs={
        shared_study.RESUMES: slot,
        'resumed_from': old.number,
        shared_study.DRIVER: self.me,
        **({'start': True} if old.user_attrs.get('start') else {}),
        **({'job': old.user_attrs['job']} if reuse and 'job' in old.user_attrs else {}),  # (until it has its own)
      },
    )
    trial_id = self.study._storage.create_new_trial(self.study._study_id, template)  # pylint: disable=protected-access
    trial = optuna.Trial(self.study, trial_id)
    overrides = old.user_attrs.get('overrides')
    if overrides is None:  # (its driver died before writing them: the stored parameters are suggested again)
      overrides = self.module.suggest(trial, self.arg or None)
    print(
      f'trial {trial.number}: resumes trial {old.number} ({reason}), in {workdir}'
      + ('' if reuse else ' from the start (its old workdir is not reachable from here)'),
      flush=True,
    )
    self.launch(_Run(trial, slot, workdir, dict(overrides), previous=trial.user_attrs.get('job')))

  def same_study_root(self, folder: str) -> bool:
    """Whether `folder` is a root of this study (its study.json names it) that this user may use."""
    try:
      info = read_root(folder) if os.path.isdir(folder) else None
      if info is not None and folder != self.root:
        launch.prepare_root(folder)
    except app.UsageError:
      return False
    return (
      info is not None
      and info.get('study_name') == self.study.study_name
      and info.get('storage') == redact.url(self.storage)
    )

  def check_own(self, tally: shared_study.Tally) -> None:
    """A trial of this driver that another driver finished or failed (it judged this driver gone) is no longer
    this driver's: its run is stopped, and the search goes on."""
    states = {t.number: t.state for ts in tally.slots.values() for t in ts}
    for number, run in list(self.runs.items()):
      state = states.get(number, optuna.trial.TrialState.RUNNING)
      if state == optuna.trial.TrialState.RUNNING:
        continue
      del self.runs[number]
      ended = self.ended(run)
      print(
        f"trial {number}: {state.name} by another driver; no longer this driver's"
        + ('.' if ended else f', its run is stopped ({run.workdir}).'),
        flush=True,
      )
      if not ended:
        run.why = f'trial {number} was finished by another driver'
        run.stop = run.stop or stop_request(run.workdir, run.job, run.why, self.local)
        self.detached.append(run)

  def _write(self, run: _Run, method, *args, **kwargs) -> bool:
    """Calls a trial's writing method; False when another driver finished the trial (check_own handles it)."""
    try:
      method(*args, **kwargs)
      return True
    except optuna.exceptions.UpdateFinishedTrialError:
      return False
    except ValueError as e:
      if 'Cannot tell a' not in str(e):
        raise
      return False

  def beat(self) -> None:
    """The heartbeat: this driver's record, its counter advanced, on every trial it runs."""
    self.me['beat'] += 1
    self.me['heartbeat'] = time.time()
    for run in list(self.runs.values()):
      self._write(run, run.trial.set_user_attr, shared_study.DRIVER, self.me)

  # -- the runs

  def launch(self, run: _Run) -> None:
    self.runs[run.number] = run
    run.cmd = [
      sys.executable,
      '-m',
      's2s_jax.main',
      self.config_flag,
      f'--workdir={run.workdir}',
      launch.cache_flag(),
      *sweep_lib.override_flags(run.overrides),
    ]
    for key, value in (('workdir', run.workdir), ('overrides', run.overrides), ('command', ' '.join(run.cmd[1:]))):
      if not self._write(run, run.trial.set_user_attr, key, value):
        return
    if self.previous_running(run):
      print(f'trial {run.number}: waiting for the run of a gone driver in {run.workdir} to end.', flush=True)
    else:
      self.submit(run)

  def submit(self, run: _Run) -> None:
    with contextlib.suppress(FileNotFoundError):
      os.remove(os.path.join(run.workdir, preemption.STOP_FILE))  # (a stop request that outlived its run)
    run.job = self.executor.submit(launch.run_job, run.cmd, run.log, launch.STOP_GRACE_S.value)
    self._write(run, run.trial.set_user_attr, 'job', self.job_record(run.job))
    print(f'trial {run.number}: {run.workdir} {run.overrides}', flush=True)

  def job_record(self, job) -> dict[str, Any]:
    """What another driver needs to tell whether the job still runs: its SLURM id, or its local controller's pid."""
    if not self.local:
      return {'executor': 'slurm', 'id': str(job.job_id)}
    record = {'executor': 'local', 'id': str(job.job_id), **shared_study.namespace(), 'pid': int(job.job_id)}
    with contextlib.suppress(psutil.NoSuchProcess, ValueError):
      record['start_time'] = psutil.Process(int(job.job_id)).create_time()
    return record

  def previous_running(self, run: _Run) -> bool:
    """Whether an older run still holds (or may soon hold) the trial's workdir: a live lock, or the job of a gone
    driver that SLURM still runs, or whose local controller is alive."""
    if workdir_lock.lock_holder(run.workdir):
      return True
    job = run.previous
    if not job:
      return False
    if job.get('executor') == 'slurm':
      return _slurm_job_running(job['id'])
    return shared_study.pid_is_local(job) and not shared_study.dead_reason(job)

  def ended(self, run: _Run) -> bool:
    return run.job.done() if run.job is not None else not self.previous_running(run)

  def cancel(self, run: _Run) -> None:
    if run.job is not None:
      run.job.cancel(check=False)
    elif run.previous and run.previous.get('executor') == 'slurm':
      subprocess.run(['scancel', str(run.previous['id'])], capture_output=True, timeout=60, check=False)

  def poll(self, run: _Run) -> None:
    """Reports the run's new validation records, prunes, and tells the study when the run has ended."""
    if run.job is None and run.stop is None and not self.previous_running(run):
      if not self.done_in_workdir(run):
        self.submit(run)  # (the older run in the workdir ended unfinished: this one resumes it)
        return
      self.finish(run, 0)
      return
    if run.stop is None:
      for step, value in validation_records(run.workdir, self.module.METRIC):
        if step in run.reported:
          continue
        run.reported.add(step)
        if not self._write(run, run.trial.report, value, step):
          return
        if step < _last_step(run.workdir) and not self.ended(run) and run.trial.should_prune():
          run.why = f'pruned at step {step}'  # (never at the last step: only the test decode is left)
          run.stop = stop_request(run.workdir, run.job, f'trial {run.number} {run.why}', self.local)
          break
    if run.stop is not None:
      outcome = stop_progress(run.stop, run.workdir, self.ended(run), lambda: self.cancel(run))
      if outcome is None:
        return
      del self.runs[run.number]
      ok = self._write(run, run.trial.set_user_attr, 'wall_s', time.time() - run.start)
      ok = ok and self._write(run, run.trial.set_user_attr, 'stop', outcome)
      if ok and self._write(run, self.study.tell, run.trial, state=optuna.trial.TrialState.PRUNED):
        print(f'trial {run.number}: {run.why}, its run {outcome} (resumable: {run.workdir})', flush=True)
      return
    if run.job is not None and run.job.done():
      self.finish(run, launch.outcome(run.job))  # (a failed job must not stop the search)

  def done_in_workdir(self, run: _Run) -> bool:
    return os.path.exists(os.path.join(run.workdir, 'DONE')) and bool(
      validation_records(run.workdir, self.module.METRIC)
    )

  def finish(self, run: _Run, code) -> None:
    del self.runs[run.number]
    if not self._write(run, run.trial.set_user_attr, 'wall_s', time.time() - run.start):
      return
    if code == 0 and self.done_in_workdir(run):
      values = [v for _, v in validation_records(run.workdir, self.module.METRIC)]
      best = max(values) if self.module.DIRECTION == 'maximize' else min(values)
      if self._write(run, self.study.tell, run.trial, best):
        print(f'trial {run.number}: {self.module.METRIC}={best:.4g}', flush=True)
      return
    tail = launch.tail(run.log, 12)
    if self._write(run, run.trial.set_user_attr, 'error', tail):
      if self._write(run, self.study.tell, run.trial, state=optuna.trial.TrialState.FAIL):
        print(f'trial {run.number}: {launch.describe(code)}; last lines of {run.log}:\n{tail}', flush=True)

  def poll_detached(self, run: _Run) -> None:
    outcome = stop_progress(run.stop, run.workdir, self.ended(run), lambda: self.cancel(run))
    if outcome is not None:
      self.detached.remove(run)
      print(f'trial {run.number}: the run of this driver {outcome} ({run.why}).', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  module, arg = load_space(_SPACE.value)
  check_metric(module)
  root = launch.prepare_root(launch.ROOT.value)
  search, storage = search_of(module, _SPACE.value), storage_url(root)
  name = bind_root(root, search, storage)
  study = make_study(module, storage, name)
  bind_study(study, search, storage)
  write_study_json(root, search, storage, study.study_name)
  Driver(study, module, arg, root, storage).run()


if __name__ == '__main__':
  app.run(main)
