"""The SLURM job this process belongs to, as SLURM's environment describes it to every process of a job.

A requeued job (`scontrol requeue`, a preemption in REQUEUE mode, a job that requeues itself) keeps its job id and
starts again with SLURM_RESTART_COUNT one higher, possibly on another node. The workdir lock (s2s_jax/workdir_lock.py)
records `job()` so that a requeued job's new start recognises the lock its earlier start left, and provenance.json
records it with every start of a run.

After a stop signal (scripts/launch.py's job: a run stopped on a scheduler's warning, a preemption, `scancel`), a job
asks SLURM what becomes of it (`after_stop`) and requeues itself where it goes on (`requeue_after_stop`).
"""

from collections.abc import Callable
import os
import re
import subprocess
from typing import Any


def job() -> dict[str, Any] | None:
  """{'cluster', 'job_id', 'restart'} of the SLURM job around this process, or None outside one. `restart`: how many
  times the job was requeued before this start (SLURM_RESTART_COUNT, unset on the first start: 0). Clusters that
  share a file system may reuse job ids, so the cluster's name (SLURM_CLUSTER_NAME) is part of the identity."""
  job_id = os.environ.get('SLURM_JOB_ID', '')
  if not job_id:
    return None
  restart = os.environ.get('SLURM_RESTART_COUNT', '')
  return {
    'cluster': os.environ.get('SLURM_CLUSTER_NAME') or None,
    'job_id': job_id,
    'restart': int(restart) if restart.isdigit() else 0,
  }


def earlier_start(holder: Any, mine: dict[str, Any] | None = None) -> str | None:
  """Why `holder` (a SLURM job as job() describes it, from a lock or record another process wrote) is an earlier
  start of this process's own job, which SLURM ended before starting the job again: the same cluster and job id with
  a lower restart count. None when it is not (another job, the same start, or no SLURM job on either side)."""
  mine = job() if mine is None else mine
  if not mine or not isinstance(holder, dict):
    return None
  restart = holder.get('restart')
  if (
    holder.get('cluster') != mine['cluster']
    or str(holder.get('job_id')) != mine['job_id']
    or not isinstance(restart, int)
    or restart >= mine['restart']
  ):
    return None
  return (
    f'it was left by restart {restart} of this SLURM job {mine["job_id"]}, which was requeued (this is restart '
    f'{mine["restart"]}; SLURM starts a job again only once the processes of its earlier start ended or their node '
    'was declared down)'
  )


def after_stop(state: str, restarts: int, restart: int) -> str:
  """What a SLURM job does once its run stopped on a stop signal, from the job's state and restart count as
  `scontrol show job` gives them then (`restart`: this start's SLURM_RESTART_COUNT):
    'requeued': SLURM requeued the job already (`scontrol requeue`, a preemption in REQUEUE mode); its next start
      resumes the run.
    'requeue': the job is still RUNNING, so the signal was a warning (`scancel --signal=TERM`, the time-limit warning
      of sbatch --signal, which submitit asks for 120 s ahead, a preemption's grace time): the job requeues itself.
    'end': the job is ending (`scancel`, the time limit reached): the stop is the job's result, reported as
      resumable."""
  if restarts > restart:
    return 'requeued'
  return 'requeue' if state == 'RUNNING' else 'end'


def _scontrol(*args: str) -> str:
  return subprocess.run(['scontrol', *args], capture_output=True, text=True, timeout=60, check=True).stdout


def _job_state(job_id: str) -> tuple[str, int]:
  """(JobState, Restarts) of a SLURM job as `scontrol show job` gives them."""
  shown = _scontrol('show', 'job', '-o', job_id)
  state, restarts = re.search(r'\bJobState=(\S+)', shown), re.search(r'\bRestarts=(\d+)', shown)
  if not (state and restarts):
    raise ValueError(f'no JobState and Restarts in: {shown.strip()[:200]}')
  return state.group(1), int(restarts.group(1))


def requeue_after_stop(job: dict[str, Any], how: str, note: Callable[[str], None]) -> bool:
  """Asks SLURM what becomes of `job` (this process's, job()) once its run stopped (`how`, in words: 'stopped on
  SIGTERM'), requeues it where it goes on (task 0 does) and returns whether the job starts again: the task then
  leaves no result. False where the job ends, or where SLURM cannot be asked or refuses the requeue: the stop is
  then the job's result, reported as resumable. Every outcome is told to note() (the run's log)."""
  head = f'SLURM job {job["job_id"]} (restart {job["restart"]}): the run {how}'
  try:
    state, restarts = _job_state(job['job_id'])
  except (OSError, subprocess.SubprocessError, ValueError) as e:
    note(f'{head}, but scontrol could not say what becomes of the job ({_error(e)}).')
    return False
  decision = after_stop(state, restarts, job['restart'])
  if decision == 'end':
    note(f'{head} and the job ends ({state}): not requeued.')
    return False
  if decision == 'requeued':
    note(f'{head}; SLURM requeued the job ({state}, restarts {restarts}).')
  elif int(os.environ.get('SLURM_PROCID', '0')) != 0:
    note(f'{head} while the job was running; task 0 requeues it.')
  else:
    try:
      _scontrol('requeue', job['job_id'])
    except (OSError, subprocess.SubprocessError) as e:
      if not _requeued_since(job):  # (SLURM may have requeued it meanwhile: a preemption in REQUEUE mode)
        note(f'{head} while the job was running; requeueing it failed ({_error(e)}).')
        return False
      note(f'{head} while the job was running; SLURM requeued it meanwhile.')
    else:
      note(f'{head} while the job was running: requeued it (scontrol requeue).')
  note('The next start of the job resumes the run from its checkpoint.')
  return True


def _requeued_since(job: dict[str, Any]) -> bool:
  try:
    return _job_state(job['job_id'])[1] > job['restart']
  except (OSError, subprocess.SubprocessError, ValueError):
    return False


def _error(e: Exception) -> str:
  text = getattr(e, 'stderr', None) or str(e)
  return ' '.join(str(text).split())
