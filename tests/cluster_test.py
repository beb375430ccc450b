"""The local cluster of scripts/local_cluster.sh, as a user meets it: plain SLURM commands and a PostgreSQL study.

Cluster tier only (`python -m pytest -m cluster tests`; .ci/run sets S2S_REQUIRE_CLUSTER=1).
"""

import os
import subprocess
import time
import uuid

import optuna
import pytest

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
