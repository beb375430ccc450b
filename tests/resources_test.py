"""CPUs a process may use: affinity, SLURM_CPUS_PER_TASK and a cgroup quota, never the host's count alone."""

import os
import subprocess
import sys

import pytest
import testutil

from s2s_jax import resources
from s2s_jax.data import workers

_SIZE = 'from s2s_jax.data import workers; print(workers.Pool().size)'


def test_slurm_cpus_per_task_caps_the_data_workers(monkeypatch):
  monkeypatch.setenv('SLURM_CPUS_PER_TASK', '1')
  assert resources.usable_cpus() == 1
  assert workers.Pool().size == 1


def test_without_limits_the_affinity_mask_counts(monkeypatch):
  monkeypatch.delenv('SLURM_CPUS_PER_TASK', raising=False)
  monkeypatch.setattr(resources, '_cgroup_quota', lambda: None)
  assert resources.usable_cpus() == len(os.sched_getaffinity(0))


def test_a_cgroup_quota_rounds_up(tmp_path):
  (tmp_path / 'cpu.max').write_text('150000 100000\n')
  assert resources._cgroup_quota(str(tmp_path / 'cpu.max')) == 2  # pylint: disable=protected-access
  (tmp_path / 'cpu.max').write_text('max 100000\n')
  assert resources._cgroup_quota(str(tmp_path / 'cpu.max')) is None  # pylint: disable=protected-access


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason='needs 2 CPUs to pin one')
def test_a_taskset_process_gets_one_worker_per_granted_cpu():
  env = testutil.env(1)
  env.pop('SLURM_CPUS_PER_TASK', None)
  out = subprocess.run(
    ['taskset', '-c', '0', sys.executable, '-c', _SIZE], env=env, capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == '1'


@pytest.mark.cluster
def test_srun_cpus_per_task_one_gets_one_worker(local_cluster):
  # The local cluster's task/none plugin pins nothing: the affinity mask stays wide, SLURM_CPUS_PER_TASK is the grant.
  del local_cluster
  out = subprocess.run(
    ['srun', '--ntasks=1', '--cpus-per-task=1', sys.executable, '-c', _SIZE],
    env=testutil.env(1),
    cwd=testutil.ROOT,
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
  )
  assert out.stdout.strip() == '1'
