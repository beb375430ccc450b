"""The driver of scripts/tune.py: it asks, runs, watches, prunes and tells the study's trials, and resumes those of gone
drivers (see scripts/tune.py's docstring). A library of scripts/tune.py (its flags come in as arguments)."""

from collections.abc import Callable
import contextlib
import os
import subprocess
import sys
import time
from typing import Any

from absl import app
import launch
import optuna
import psutil
import tune_runs
import tune_study

from s2s_jax import preemption
from s2s_jax import redact
from s2s_jax import shared_study
from s2s_jax import sweep_lib
from s2s_jax import workdir_lock


class Driver:
  """Runs trials of the study until it has --trials finished ones (see scripts/tune.py's docstring)."""

  def __init__(
    self,
    study: optuna.Study,
    module,
    arg: str,
    root: str,
    storage: str,
    *,
    trials: int,
    poll_s: float,
    sampler: Callable[[int], optuna.samplers.BaseSampler],
  ):
    """`trials`, `poll_s`: --trials, --poll_seconds; sampler(n): the sampler trial n is asked with (seeded with
    --sampler_seed + n)."""
    self.study, self.module, self.arg, self.root, self.storage = study, module, arg, root, storage
    self.trials, self.poll_s, self.sampler = trials, poll_s, sampler
    self.me = shared_study.driver_record(root, poll_s)
    self.watch = shared_study.OwnerWatch(self.me)
    self.runs: dict[int, tune_runs.Run] = {}  # trial number -> run
    self.detached: list[tune_runs.Run] = []  # runs of trials no longer this driver's, being stopped
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
      f'{self.trials} in all; this driver is {shared_study.describe(self.me)}.',
      flush=True,
    )
    while True:
      tally = self.tally()
      self.check_own(tally)
      if self.take_orphans(tally):
        tally = self.tally()
      while self.has_room() and (tally.waiting or tally.finished + tally.in_flight < self.trials):
        self.ask()
        tally = self.tally()
      if not self.runs and not self.detached:
        if tally.finished >= self.trials:
          break
        if not waiting_noted:
          print(f'Waiting: {tally.in_flight} trial(s) run by other drivers.', flush=True)
          waiting_noted = True
      self.beat()
      time.sleep(self.poll_s)
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
    self.study.sampler = self.sampler(predicted)
    if predicted == 0 and getattr(self.module, 'START', None):  # the hand-set configuration the search starts from
      self.study.enqueue_trial(dict(self.module.START), user_attrs={'start': True})  # (asked next, as trial 0)
    trial = self.study.ask()
    trial.set_user_attr(shared_study.DRIVER, self.me)
    if trial.number != predicted and not isinstance(self.study.sampler, tune_study.GridSampler):
      self.study.sampler = self.sampler(trial.number)  # (used by suggest)
    slot = int(trial.user_attrs.get(shared_study.RESUMES, trial.number))
    if self.tally().rank(slot) >= self.trials:
      trial.set_user_attr(shared_study.SURPLUS, True)
      self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
      print(f"trial {trial.number}: withdrawn, another driver took the study's last place.", flush=True)
      return
    overrides = self.module.suggest(trial, self.arg or None)
    self.launch(tune_runs.Run(trial, slot, os.path.join(self.root, f'trial_{slot}'), dict(overrides)))

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
    self.launch(tune_runs.Run(trial, slot, workdir, dict(overrides), previous=trial.user_attrs.get('job')))

  def same_study_root(self, folder: str) -> bool:
    """Whether `folder` is a root of this study (its study.json names it) that this user may use."""
    try:
      info = tune_study.read_root(folder) if os.path.isdir(folder) else None
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
        run.stop = run.stop or tune_runs.stop_request(run.workdir, run.job, run.why, self.local)
        self.detached.append(run)

  def _write(self, run: tune_runs.Run, method, *args, **kwargs) -> bool:
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

  def launch(self, run: tune_runs.Run) -> None:
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

  def submit(self, run: tune_runs.Run) -> None:
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

  def previous_running(self, run: tune_runs.Run) -> bool:
    """Whether an older run still holds (or may soon hold) the trial's workdir: a live lock, or the job of a gone
    driver that SLURM still runs, or whose local controller is alive."""
    if workdir_lock.lock_holder(run.workdir):
      return True
    job = run.previous
    if not job:
      return False
    if job.get('executor') == 'slurm':
      return tune_runs.slurm_job_running(job['id'])
    return shared_study.pid_is_local(job) and not shared_study.dead_reason(job)

  def ended(self, run: tune_runs.Run) -> bool:
    return run.job.done() if run.job is not None else not self.previous_running(run)

  def cancel(self, run: tune_runs.Run) -> None:
    if run.job is not None:
      run.job.cancel(check=False)
    elif run.previous and run.previous.get('executor') == 'slurm':
      subprocess.run(['scancel', str(run.previous['id'])], capture_output=True, timeout=60, check=False)

  def poll(self, run: tune_runs.Run) -> None:
    """Reports the run's new validation records, prunes, and tells the study when the run has ended."""
    if run.job is None and run.stop is None and not self.previous_running(run):
      if not self.done_in_workdir(run):
        self.submit(run)  # (the older run in the workdir ended unfinished: this one resumes it)
        return
      self.finish(run, 0)
      return
    if run.stop is None:
      for step, value in tune_runs.validation_records(run.workdir, self.module.METRIC):
        if step in run.reported:
          continue
        run.reported.add(step)
        if not self._write(run, run.trial.report, value, step):
          return
        if step < tune_runs.last_step(run.workdir) and not self.ended(run) and run.trial.should_prune():
          run.why = f'pruned at step {step}'  # (never at the last step: only the test decode is left)
          run.stop = tune_runs.stop_request(run.workdir, run.job, f'trial {run.number} {run.why}', self.local)
          break
    if run.stop is not None:
      outcome = tune_runs.stop_progress(run.stop, run.workdir, self.ended(run), lambda: self.cancel(run))
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

  def done_in_workdir(self, run: tune_runs.Run) -> bool:
    return os.path.exists(os.path.join(run.workdir, 'DONE')) and bool(
      tune_runs.validation_records(run.workdir, self.module.METRIC)
    )

  def finish(self, run: tune_runs.Run, code) -> None:
    del self.runs[run.number]
    if not self._write(run, run.trial.set_user_attr, 'wall_s', time.time() - run.start):
      return
    if code == 0 and self.done_in_workdir(run):
      values = [v for _, v in tune_runs.validation_records(run.workdir, self.module.METRIC)]
      best = max(values) if self.module.DIRECTION == 'maximize' else min(values)
      if self._write(run, self.study.tell, run.trial, best):
        print(f'trial {run.number}: {self.module.METRIC}={best:.4g}', flush=True)
      return
    tail = launch.tail(run.log, 12)
    if self._write(run, run.trial.set_user_attr, 'error', tail):
      if self._write(run, self.study.tell, run.trial, state=optuna.trial.TrialState.FAIL):
        print(f'trial {run.number}: {launch.describe(code)}; last lines of {run.log}:\n{tail}', flush=True)

  def poll_detached(self, run: tune_runs.Run) -> None:
    outcome = tune_runs.stop_progress(run.stop, run.workdir, self.ended(run), lambda: self.cancel(run))
    if outcome is not None:
      self.detached.remove(run)
      print(f'trial {run.number}: the run of this driver {outcome} ({run.why}).', flush=True)
