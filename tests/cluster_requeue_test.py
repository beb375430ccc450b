"""Preemption and requeue on the local SLURM cluster, as a user meets them: a training job interrupted mid-way by
`scancel --signal=TERM` (the warning a time limit or a preemption with --signal gives: the run checkpoints and the
job requeues itself) and by `scontrol requeue` (SLURM stops the job and queues it again) resumes under the same job
id and ends with the final parameters, metrics.jsonl and eval_test.json (timing fields aside) of the same run left
alone; through scripts/sweep.py --executor=slurm (the driver waits for the requeued job and reports it done) and
through scripts/slurm_train.sh under plain sbatch.

SLURM holds a requeued job for its credential lifetime (cred_expire, 120 s) before it may start again; the tests
release it after a few seconds with `scontrol update JobId=J StartTime=now` (on a real cluster the job just waits).

Cluster tier only (`python -m pytest -m cluster tests`; .ci/run sets S2S_REQUIRE_CLUSTER=1).
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import testutil

from s2s_jax import fileio
from s2s_jax import workdir as workdir_lib
from s2s_jax import workdir_lock

pytestmark = pytest.mark.cluster

_CONFIG = 'experiments/default.py:size=tiny'
# Long enough that a stop after the first checkpoint of a start lands mid-training (1000 tiny steps take about 10 s
# once compiled); a checkpoint and a validation every 100 steps.
_OVERRIDES = {'num_train_steps': 1000, 'eval_every_steps': 100, 'checkpoint_every_steps': 100}
_FLAGS = [f'--config.{k}={v}' for k, v in _OVERRIDES.items()]
_DIGEST = re.compile(r'Process 0: parameters at step (\d+) have sha256 (\w+)')
_STOPPED = re.compile(r'SIGTERM: stopped at step (\d+) with a checkpoint')
_ONE_POINT = f"""
from s2s_jax import sweep_lib
CONFIG = 'experiments/default.py'
CONFIG_ARG = 'size=tiny'


def get_sweep(arg=None):
  return sweep_lib.points({_OVERRIDES!r})
"""
# The identity check of scripts/chaos_resume.py: final and best parameters bitwise, eval_test.json and metrics.jsonl
# without their timing fields. (In a process of its own: its flags would clash with scripts/launch.py's here.)
_COMPARE = (
  'import sys\n'
  'sys.path.insert(0, "scripts")\n'
  'import chaos_resume\n'
  'print(chaos_resume.first_difference(sys.argv[1], sys.argv[2]) or "IDENTICAL")\n'
)


@pytest.fixture(scope='module')
def reference(local_cluster, tmp_path_factory) -> dict:
  """The same run left alone (in a plain process: where it runs does not change what it computes); its data folder
  (shared with the runs under test) and the hash of its final parameters."""
  del local_cluster
  folder = tmp_path_factory.mktemp('reference')
  cache, workdir = str(folder / 'data'), str(folder / 'run')
  done = testutil.run('-m', 's2s_jax.main', f'--config={_CONFIG}', f'--workdir={workdir}', *_FLAGS, S2S_CACHE_DIR=cache)
  assert done.returncode == 0, done.stderr[-3000:]
  return {'workdir': workdir, 'cache': cache, 'digest': _DIGEST.findall(done.stderr)}


def _read(path: str) -> str:
  with open(path, encoding='utf-8', errors='replace') as f:
    return f.read()


def _job_state(job: str) -> tuple[str, int]:
  """(JobState, Restarts) of a job from scontrol ('' when SLURM no longer knows it)."""
  shown = subprocess.run(['scontrol', 'show', 'job', '-o', job], capture_output=True, text=True, check=False).stdout
  state, restarts = re.search(r'JobState=(\S+)', shown), re.search(r'Restarts=(\d+)', shown)
  return (state.group(1), int(restarts.group(1))) if state and restarts else ('', 0)


# A start released in the second its predecessor's credential was revoked is killed ("Job credential revoked"):
# the hold SLURM puts on a requeued job exists to avoid that.
_REVOKED_S = 3.0
_ENDED = ('', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY')


def _wait(condition, what: str, context, timeout: float = 240, job: str = '') -> None:
  """Polls `condition` until it holds; fails naming `what`, with context() (the logs), after `timeout` seconds, or
  as soon as `job` has ended."""
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      raise AssertionError(f'{what}: not within {timeout} s.\n{context()[-4000:]}')
    if job and _job_state(job)[0] in _ENDED and not condition():
      raise AssertionError(f'{what}: job {job} ended ({_job_state(job)[0] or "gone"}) first.\n{context()[-4000:]}')
    time.sleep(0.1)


def _interrupt(job: str, workdir: str, command: list[str], context, before_release=None) -> int:
  """Once the run has committed a checkpoint beyond its start, interrupts the job with `command` and waits for SLURM
  to requeue it (its restart count goes up); then releases it from the credential hold (after `before_release()`).
  Returns the step the run stopped at, from its log."""
  _, restart = _job_state(job)

  def latest() -> int:
    return max(workdir_lib.recorded_saves(workdir), default=-1)

  first = latest()  # (where this start resumed from)
  _wait(lambda: latest() > first, f'a checkpoint after step {first}', context, job=job)
  subprocess.run(command, check=True)
  requeued = f'job {job} requeued after {" ".join(command)}'
  _wait(lambda: _job_state(job) == ('PENDING', restart + 1), requeued, context, job=job)
  if before_release:
    before_release()
  time.sleep(_REVOKED_S)
  subprocess.run(['scontrol', 'update', f'JobId={job}', 'StartTime=now'], check=True)
  return int(_STOPPED.findall(context())[-1])


def _assert_identical_to(reference: dict, workdir: str, log: str, job: str, stops: list[int]) -> None:
  """The resumed run ends as the reference: what chaos_resume compares, the logged final hash; provenance.json
  records each start, the step it resumed from and its restart of the job."""
  assert stops == sorted(stops) and 0 < stops[0] and stops[-1] < _OVERRIDES['num_train_steps'], stops
  assert [step for step, _ in reference['digest']] == ['1000']
  assert _DIGEST.findall(log)[-1:] == reference['digest'], log[-3000:]
  compared = testutil.run('-c', _COMPARE, reference['workdir'], workdir)
  assert compared.stdout.strip().splitlines()[-1:] == ['IDENTICAL'], compared.stdout + compared.stderr[-2000:]
  with open(os.path.join(workdir, 'provenance.json'), encoding='utf-8') as f:
    starts = json.load(f)['starts']
  assert [s['from_step'] for s in starts] == [0, *stops], starts
  assert [(s['slurm']['job_id'], s['slurm']['restart']) for s in starts] == [(job, r) for r in range(len(starts))]


def _sacct_states(job: str) -> list[str]:
  """Every start's final state, oldest first (sacct --duplicates: a requeued start is REQUEUED)."""
  out = subprocess.run(
    ['sacct', '-j', job, '-X', '-n', '-P', '--duplicates', '--format=State'], capture_output=True, text=True, check=True
  ).stdout
  return out.split()


def test_a_sweep_job_warned_twice_then_requeued_resumes_and_ends_as_the_run_left_alone(reference, tmp_path):
  # Before: after `scancel --signal=TERM` (or USR2) the job returned "stopped by SIGTERM" and was not requeued; the
  # sweep reported the point as failed. After `scontrol requeue` the same ("0 succeeded, 1 failed: base."), while
  # the requeued job ran again unwatched.
  sweep_file, root = tmp_path / 'one_point.py', str(tmp_path / 'sweep')
  sweep_file.write_text(_ONE_POINT)
  workdir, out_path = os.path.join(root, 'base'), str(tmp_path / 'driver.out')
  with open(out_path, 'w', encoding='utf-8') as out:
    driver = subprocess.Popen(
      [sys.executable, 'scripts/sweep.py', f'--sweep={sweep_file}', f'--root={root}', '--executor=slurm'],
      cwd=testutil.ROOT,
      env=testutil.env(1, S2S_CACHE_DIR=reference['cache']),
      stdout=out,
      stderr=subprocess.STDOUT,
    )

  def context() -> str:
    log = _read(workdir + '.log') if os.path.exists(workdir + '.log') else ''
    return f'{log[-2500:]}\n--- the driver:\n{_read(out_path)}'

  job = ''
  try:
    _wait(lambda: re.search(r'base: submitted as SLURM job (\d+)', _read(out_path)), 'the job submitted', context)
    job = re.search(r'base: submitted as SLURM job (\d+)', _read(out_path)).group(1)
    stops = [
      _interrupt(job, workdir, command + [job], context)
      for command in (
        ['scancel', '--signal=TERM'],  # a warning: the run checkpoints, the job requeues itself
        ['scancel', '--signal=USR2'],  # submitit's time-limit warning (sbatch --signal=USR2@120): the same
        ['scontrol', 'requeue'],  # SLURM stops the job (SIGTERM) and requeues it
      )
    ]
    _wait(lambda: driver.poll() is not None, 'the sweep ended', context)
  finally:
    if driver.poll() is None:
      driver.kill()
    if job and _job_state(job)[0] not in ('', 'COMPLETED'):
      subprocess.run(['scancel', job], check=False)
  output, log = _read(out_path), _read(workdir + '.log')
  assert driver.returncode == 0, context()
  assert output.endswith('base: done\n1 succeeded, 0 failed.\n'), output
  assert f'SLURM job {job} (restart 0): the run stopped on SIGTERM while the job was running: requeued it' in log
  assert re.search(r'SIGUSR2 received: passed on to the run \(pid \d+\) as SIGTERM', log), log[-3000:]
  assert f'SLURM job {job} (restart 1): the run stopped on SIGUSR2 while the job was running: requeued it' in log
  assert f'SLURM job {job} (restart 2): the run stopped on SIGTERM; SLURM requeued the job' in log
  assert 'Second signal' not in log  # (each stop wrote its checkpoint)
  _assert_identical_to(reference, workdir, log, job, stops)
  starts = ['REQUEUED'] * 3 + ['COMPLETED']
  _wait(lambda: _sacct_states(job) == starts, 'sacct: every start', lambda: str(_sacct_states(job)), timeout=60)


def test_the_sbatch_script_requeues_itself_and_takes_over_the_lock_its_start_left_on_another_node(reference, tmp_path):
  # Before: there was no sbatch script; a job whose run stopped on the warning just ended. A restart of the job on
  # another node found its earlier start's lock (left by a start SLURM killed) and refused: "in use by host node-b"
  # (the job FAILED). Then `scontrol requeue`, as for a sweep job.
  workdir, out_path = str(tmp_path / 'run'), str(tmp_path / 'job.out')
  submitted = subprocess.run(
    ['sbatch', '--parsable', f'--output={out_path}', 'scripts/slurm_train.sh', f'--config={_CONFIG}']
    + [f'--workdir={workdir}', *_FLAGS],
    cwd=testutil.ROOT,
    env=testutil.env(1, S2S_CACHE_DIR=reference['cache'], PYTHON=sys.executable),
    capture_output=True,
    text=True,
    check=True,
  )
  job = submitted.stdout.strip()

  def context() -> str:
    return _read(out_path) if os.path.exists(out_path) else ''

  def as_if_killed_on_another_node() -> None:
    """The lock an earlier start leaves when SLURM kills it, there: a holder no process here can look up."""
    with open(os.path.join(workdir, 'provenance.json'), encoding='utf-8') as f:
      earlier = json.load(f)['starts'][-1]['slurm']
    holder = {'host': 'node-b', 'pid': 4321, 'start_time': time.time(), 'pid_ns': 1, 'boot_id': 'b', 'id': 'earlier'}
    holder.update(beat=5, heartbeat=time.time(), expires_s=600.0, slurm=earlier, command='python -m s2s_jax.main')
    fileio.write_json(os.path.join(workdir, workdir_lock.LOCK_FILE), holder)

  try:
    stops = [_interrupt(job, workdir, ['scancel', '--signal=TERM', job], context, as_if_killed_on_another_node)]
    stops.append(_interrupt(job, workdir, ['scontrol', 'requeue', job], context))
    _wait(lambda: _job_state(job)[0] in _ENDED, f'job {job} ended', context)
  finally:
    if _job_state(job)[0] not in ('', 'COMPLETED'):
      subprocess.run(['scancel', job], check=False)
  log = _read(out_path)
  assert _job_state(job)[0] in ('', 'COMPLETED') and os.path.exists(os.path.join(workdir, 'DONE')), log[-4000:]
  assert f'SLURM job {job} (restart 0): the run stopped with a checkpoint before its end' in log
  assert re.search(
    rf'Taking over the lock of host node-b, pid 4321 \(SLURM job {job}, restart 0\).*it was left by restart 0 of '
    rf'this SLURM job {job}, which was requeued \(this is restart 1;',
    log,
  ), log[-4000:]
  assert f'SLURM job {job} (restart 2): the run is done' in log
  assert 'Second signal' not in log and log.count('with a checkpoint before its end') == 1  # (SLURM requeued it)
  _assert_identical_to(reference, workdir, log, job, stops)
