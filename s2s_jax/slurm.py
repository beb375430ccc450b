"""The SLURM job this process belongs to, as SLURM's environment describes it to every process of a job.

A requeued job (`scontrol requeue`, a preemption in REQUEUE mode, a job that requeues itself) keeps its job id and
starts again with SLURM_RESTART_COUNT one higher, possibly on another node. The workdir lock (s2s_jax/workdir_lock.py)
records `job()` so that a requeued job's new start recognises the lock its earlier start left, and provenance.json
records it with every start of a run.
"""

import os
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
