"""scripts/sweep.py --executor=slurm on the local cluster, as a user runs it: real sbatch jobs (seen in squeue while
they run, their states read from sacct), the same records as the local executor, a failed point reported with its
job id and log tail while the others go on, and a point of several SLURM tasks (multi-process training).

Cluster tier only (`python -m pytest -m cluster tests`; .ci/run sets S2S_REQUIRE_CLUSTER=1).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import submitit
import testutil

from s2s_jax import checkpointing

pytestmark = pytest.mark.cluster

_SUBMITTED = re.compile(r'^(\S+): submitted as SLURM job (\d+)$', re.M)
_DIGEST = re.compile(r'Process (\d+): parameters at step (\d+) have sha256 (\w+)')


def _sweep(root, sweep: str, *flags: str, devices: int = 1, cache: str, timeout: float = 480) -> dict:
  """Runs scripts/sweep.py to its end while watching squeue. Returns its exit code, output, the SLURM job id of
  every run it printed, and what squeue showed of each job: {job id: set of (name, state)}."""
  out_path = root + '.driver.out'
  with open(out_path, 'w', encoding='utf-8') as out:
    driver = subprocess.Popen(
      [sys.executable, 'scripts/sweep.py', f'--sweep={sweep}', f'--root={root}', *flags],
      cwd=testutil.ROOT,
      env=testutil.env(devices, S2S_CACHE_DIR=cache),
      stdout=out,
      stderr=subprocess.STDOUT,
      text=True,
    )
  seen, deadline = {}, time.monotonic() + timeout
  try:
    while driver.poll() is None:
      if time.monotonic() > deadline:
        raise AssertionError(f'the sweep did not end within {timeout} s:\n{_read(out_path)[-3000:]}')
      queue = subprocess.run(['squeue', '-h', '-o', '%i|%j|%T'], capture_output=True, text=True, check=True).stdout
      for line in queue.splitlines():
        job, name, state = line.split('|')
        seen.setdefault(job, set()).add((name, state))
      time.sleep(0.5)
  finally:
    if driver.poll() is None:
      driver.kill()
      driver.wait()
  output = _read(out_path)
  jobs = dict(_SUBMITTED.findall(output))
  seen = {j: seen.get(j, set()) for j in jobs.values()}
  return {'code': driver.returncode, 'output': output, 'jobs': jobs, 'seen': seen}


def _read(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


def _sacct_state(job: str, timeout: float = 60) -> str:
  """The job's final state in the accounting database (sacct; it may lag the job's end by a moment)."""
  deadline, state = time.monotonic() + timeout, ''
  while time.monotonic() < deadline:
    lines = subprocess.run(
      ['sacct', '-j', job, '-X', '-n', '-P', '--format=State'], capture_output=True, text=True, check=True
    ).stdout.split()
    state = lines[0] if lines else ''
    if state in ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL'):
      return state
    time.sleep(0.5)
  raise AssertionError(f'job {job} still {state!r} in sacct after {timeout} s')


def _untimed(record: dict) -> dict:
  """A metrics record or evaluation without its timing fields (wall_s, steps_per_s, decode_s, ...)."""
  return {k: v for k, v in record.items() if not k.endswith('_s')}


def _records(workdir: str) -> dict:
  """What a run leaves that must not depend on where it ran: its metrics and test evaluation (timing aside), the
  test hypotheses, and the final parameters' hash from its log."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    metrics = [_untimed(json.loads(line)) for line in f]
  with open(os.path.join(workdir, 'eval_test.json'), encoding='utf-8') as f:
    evaluation = _untimed(json.load(f))
  return {
    'metrics': metrics,
    'eval_test': evaluation,
    'hypotheses': _read(os.path.join(workdir, 'eval_test.hyp.txt')),
    'digests': _DIGEST.findall(_read(workdir + '.log')),
    'done': os.path.exists(os.path.join(workdir, 'DONE')),
  }


def _assert_states_right(root: str, jobs: dict, expected: dict) -> None:
  """sacct, and submitit reading it as the driver does, give each job the expected final state."""
  for name, job in jobs.items():
    assert _sacct_state(job) == expected[name], (name, job)
    assert submitit.SlurmJob(folder=os.path.join(root, '.submitit'), job_id=job).state == expected[name], (name, job)


def test_the_smoke_sweep_through_slurm_ends_with_the_records_of_the_local_executor(local_cluster, tmp_path):
  # launch.py asked every job for one GPU: sbatch refused each ("Invalid generic resource (gres) specification").
  del local_cluster
  cache = str(tmp_path / 'data')
  local = _sweep(str(tmp_path / 'local'), 'experiments/sweeps/smoke.py', '--parallel=2', cache=cache)
  assert local['code'] == 0, local['output'][-3000:]
  slurm = _sweep(str(tmp_path / 'slurm'), 'experiments/sweeps/smoke.py', '--executor=slurm', cache=cache)
  assert slurm['code'] == 0, slurm['output'][-3000:]
  assert 'Bypassing' not in slurm['output']  # submitit read every job state from sacct
  assert '2 succeeded, 0 failed.' in slurm['output']
  names = ['attention=bahdanau', 'attention=none_concat']
  assert sorted(slurm['jobs']) == names
  for name, job in slurm['jobs'].items():  # each job was seen running in the queue, under its run's name
    assert (name, 'RUNNING') in slurm['seen'][job], (name, job, slurm['seen'][job])
  _assert_states_right(str(tmp_path / 'slurm'), slurm['jobs'], dict.fromkeys(names, 'COMPLETED'))
  for name in names:
    here, there = _records(str(tmp_path / 'local' / name)), _records(str(tmp_path / 'slurm' / name))
    assert there['done'] and there['digests'] and there['metrics'], name
    assert there == here, name
  assert _read(str(tmp_path / 'local' / 'sweep.json')) == _read(str(tmp_path / 'slurm' / 'sweep.json'))


_TWO_POINTS = """
from s2s_jax import sweep_lib
CONFIG = 'experiments/default.py'
CONFIG_ARG = 'size=tiny'


def get_sweep(arg=None):
  return sweep_lib.points(
    {'model.attention': 'bahdanau', 'num_train_steps': 20},
    {'model.attention': 'bogus', 'num_train_steps': 20},  # fails: not an attention
  )
"""


def test_a_point_of_two_tasks_trains_as_two_processes_and_a_failed_point_is_reported(local_cluster, tmp_path):
  # --tasks_per_node did not exist: no sweep point could ask for several tasks. A failed run left its job COMPLETED.
  del local_cluster
  sweep_file, root = tmp_path / 'two_points.py', str(tmp_path / 'out')
  sweep_file.write_text(_TWO_POINTS)
  result = _sweep(root, str(sweep_file), '--executor=slurm', '--tasks_per_node=2', devices=2, cache=str(tmp_path))
  output = result['output']
  assert result['code'] == 1, output[-3000:]
  assert 'Bypassing' not in output
  assert '1 succeeded, 1 failed: attention=bogus.' in output
  jobs = result['jobs']
  assert sorted(jobs) == ['attention=bahdanau', 'attention=bogus']
  # The failed point: its job id, its result and the last lines of its log, where the error names what to fix.
  report = output.split('attention=bogus: FAILED', 1)[1]
  assert report.startswith(
    f' (exit 1); SLURM job {jobs["attention=bogus"]}; last lines of {root}/attention=bogus.log '
    '(other tasks: attention=bogus.task1.log):\n'
  ), report[:500]
  assert "ValueError: model.attention='bogus' is not one of" in report.split('\n1 succeeded')[0]
  _assert_states_right(root, jobs, {'attention=bahdanau': 'COMPLETED', 'attention=bogus': 'FAILED'})
  assert ('attention=bahdanau', 'RUNNING') in result['seen'][jobs['attention=bahdanau']]

  # The point of two tasks: two processes of one training (JAX found each other through SLURM's environment),
  # each logging the same final parameters, which are those of the checkpoint.
  workdir = os.path.join(root, 'attention=bahdanau')
  assert os.path.exists(os.path.join(workdir, 'DONE'))
  first, second = _read(workdir + '.log'), _read(workdir + '.task1.log')
  assert 'Process 0 of 2' in first and 'Process 1 of 2' in second
  digests = _DIGEST.findall(first) + _DIGEST.findall(second)
  assert sorted(p for p, _, _ in digests) == ['0', '1'] and len({h for _, _, h in digests}) == 1, digests
  params, _ = checkpointing.restore_params(workdir, 'latest')
  assert checkpointing.params_sha256(params) == digests[0][2]


def test_a_job_sbatch_refuses_is_reported_and_the_sweep_goes_on(local_cluster, tmp_path):
  del local_cluster
  result = _sweep(
    str(tmp_path / 'out'), 'experiments/sweeps/smoke.py', '--executor=slurm', '--partition=nope', cache=str(tmp_path)
  )
  assert result['code'] == 1, result['output'][-3000:]
  for name in ('attention=bahdanau', 'attention=none_concat'):
    assert f'{name}: FAILED (not submitted: sbatch: error: invalid partition specified: nope; ' in result['output']
  assert '0 succeeded, 2 failed: attention=bahdanau, attention=none_concat.' in result['output']
  assert 'Traceback' not in result['output']
