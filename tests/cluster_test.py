"""The local cluster of scripts/local_cluster.sh, as a user meets it: plain SLURM commands and a PostgreSQL study.

Cluster tier only (`python -m pytest -m cluster tests`; .ci/run sets S2S_REQUIRE_CLUSTER=1).
"""

import os
import re
import socket
import subprocess
import sys
import time
import uuid

import jax
import numpy as np
import optuna
import pytest
import testutil

from s2s_jax import checkpointing

pytestmark = pytest.mark.cluster
_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts', 'local_cluster.sh')


def _run(*cmd: str, **kw) -> str:
  return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw).stdout


def _wait_state(job_id: str, states: set[str], timeout: float = 60.0) -> str:
  """The job's state in sacct (accounting) once it is one of `states`."""
  deadline, state = time.time() + timeout, ''
  while time.time() < deadline:
    lines = _run('sacct', '-j', job_id, '-X', '-n', '-P', '--format=State').split()
    state = lines[0] if lines else ''
    if state in states:
      return state
    time.sleep(0.5)
  raise AssertionError(f'job {job_id} still {state!r} after {timeout} s')


def test_start_is_idempotent_and_status_is_up(local_cluster):
  again = _run(_SCRIPT, 'start')
  assert f'export S2S_CLUSTER_PG_URL={local_cluster["S2S_CLUSTER_PG_URL"]}' in again
  status = _run(_SCRIPT, 'status')
  assert 'slurmctld: running' in status and 'postgresql' in status and 'down' not in status


def test_sbatch_job_runs_and_sacct_reports_it(local_cluster, tmp_path):
  del local_cluster
  out = tmp_path / 'job.out'
  job = _run('sbatch', '--parsable', f'--output={out}', '--wrap', 'echo "$SLURM_JOB_ID on $SLURMD_NODENAME"').strip()
  assert _wait_state(job, {'COMPLETED', 'FAILED'}) == 'COMPLETED'
  assert out.read_text().split()[0] == job


def test_srun_starts_two_tasks(local_cluster):
  del local_cluster
  ranks = _run('srun', '--ntasks=2', '--cpus-per-task=1', 'bash', '-c', 'echo $SLURM_PROCID').split()
  assert sorted(ranks) == ['0', '1']


def test_a_study_in_postgresql_is_shared_by_two_clients(local_cluster):
  url, name = local_cluster['S2S_CLUSTER_PG_URL'], f'cluster-test-{uuid.uuid4().hex[:8]}'
  first = optuna.create_study(storage=url, study_name=name, direction='maximize')
  first.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.5))
  second = optuna.load_study(storage=url, study_name=name)
  assert [t.value for t in second.get_trials()] == [1.5]
  optuna.delete_study(storage=url, study_name=name)


_TRAIN = [
  '-m',
  's2s_jax.main',
  '--config=experiments/default.py:size=tiny',
  '--config.num_train_steps=20',
  '--config.model.dropout_rate=0.0',
]
_DIGEST = re.compile(r'Process (\d+): parameters at step 20 have sha256 (\w+)')


def _digests(log: str) -> dict[str, str]:
  return dict(_DIGEST.findall(log))


def test_srun_two_process_training_equals_the_hand_started_job(local_cluster, tmp_path):
  """srun --ntasks=2 with no coordinator flags (JAX reads the SLURM environment) computes what the same two
  processes started by hand with --coordinator_address compute: bitwise equal parameters; and what one process
  with all 4 devices computes, to the rounding of the gradient sum's order (as tests/multihost_test.py)."""
  del local_cluster
  env = testutil.env(2, S2S_CACHE_DIR=str(tmp_path / 'data'))
  under_srun = subprocess.run(
    ['srun', '--ntasks=2', '--cpus-per-task=1', sys.executable, *_TRAIN, f'--workdir={tmp_path / "srun"}'],
    cwd=testutil.ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert under_srun.returncode == 0, under_srun.stderr[-3000:]
  assert 'Process 1 of 2' in under_srun.stderr
  srun_digests = _digests(under_srun.stderr)
  assert sorted(srun_digests) == ['0', '1'] and len(set(srun_digests.values())) == 1

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  by_hand = [
    subprocess.Popen(
      [
        sys.executable,
        *_TRAIN,
        f'--workdir={tmp_path / "hand"}',
        f'--coordinator_address=127.0.0.1:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      cwd=testutil.ROOT,
      env=env,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  hand_digests = {}
  for p in by_hand:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    hand_digests.update(_digests(err))
  assert hand_digests == srun_digests

  one = testutil.run(*_TRAIN, f'--workdir={tmp_path / "one"}', devices=4, S2S_CACHE_DIR=str(tmp_path / 'data'))
  assert one.returncode == 0, one.stderr[-3000:]
  multi, _ = checkpointing.restore_params(str(tmp_path / 'srun'), 'latest')
  single, _ = checkpointing.restore_params(str(tmp_path / 'one'), 'latest')
  assert checkpointing.params_sha256(multi) == srun_digests['0']
  for a, b in zip(jax.tree.leaves(multi), jax.tree.leaves(single)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
