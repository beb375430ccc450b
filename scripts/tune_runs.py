"""A trial's run for scripts/tune.py: its validation records, its last step, stopping it (through its workdir, a
signal or its job) and the job of a gone driver's run. A library of scripts/tune.py (no flags of its own)."""

import contextlib
import dataclasses
import json
import math
import os
import signal
import subprocess
import time
from typing import Any

import launch
import optuna

from s2s_jax import fileio
from s2s_jax import preemption
from s2s_jax import shared_study
from s2s_jax import workdir_lock

_JOB_MARGIN_S = 30.0  # a run told to stop through its workdir or its job gets this long more than --stop_grace_s
_RUNNING_SLURM_STATES = {'RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'STOPPED', 'SIGNALING', 'STAGE_OUT'}
_PENDING_SLURM_STATES = {'PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESV_DEL_HOLD'}


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


def last_step(workdir: str) -> float:
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


def slurm_job_running(job_id: str) -> bool:
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
class Run:
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
