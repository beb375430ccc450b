"""Requeued SLURM jobs, without a scheduler: the workdir lock an earlier start of the same job left is taken over at
once (on any host), every start records its job and restart count, and scripts/launch.py's job requeues itself after
a warning signal and leaves no result when the job starts again. (On the local cluster, with real requeues:
tests/cluster_requeue_test.py.)"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import psutil
import testutil

from s2s_jax import fileio
from s2s_jax import provenance
from s2s_jax import slurm
from s2s_jax import workdir_lock

sys.path.insert(0, os.path.join(testutil.ROOT, 'scripts'))
import launch  # pylint: disable=g-import-not-at-top,wrong-import-position


def _slurm_env(job_id='4242', restart=None, cluster='s2s', **extra):
  """The variables SLURM gives a job's processes (SLURM_RESTART_COUNT is unset on a job's first start)."""
  env = {'SLURM_JOB_ID': job_id, 'SLURM_CLUSTER_NAME': cluster, **extra}
  if restart is not None:
    env['SLURM_RESTART_COUNT'] = str(restart)
  return env


def _outside_slurm():
  return {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}


def _plant_lock(workdir, slurm_job, here=False):
  """lock.json as a run on another node left it when its job's start was ended (SIGKILL, a node failure): no process
  here can be looked up, its heartbeat is fresh by the file system's clock. `here`: as this (live) process would."""
  holder = {
    'host': 'node-b',
    'pid': 4321,
    'start_time': time.time() - 60,
    'pid_ns': 4026531836,
    'boot_id': 'another-boot',
    'id': 'earlier-start',
    'beat': 3,
    'heartbeat': time.time(),
    'heartbeat_s': 60.0,
    'expires_s': 600.0,
    'slurm': slurm_job,
    'command': 'python -m s2s_jax.main --workdir=x',
  }
  if here:
    holder.update(
      host=socket.gethostname(),
      pid=os.getpid(),
      start_time=psutil.Process().create_time(),
      **workdir_lock.namespace(),
    )
  fileio.write_json(os.path.join(workdir, workdir_lock.LOCK_FILE), holder)
  return holder


def _text(path):
  """The file's text ('' when it does not exist)."""
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    return f.read()


def _lock(workdir):
  with open(os.path.join(workdir, workdir_lock.LOCK_FILE)) as f:
    return json.load(f)


class RequeuedLockTest(parameterized.TestCase):
  @parameterized.named_parameters(('on_another_node', False), ('alive_on_this_node', True))
  def test_the_lock_of_an_earlier_start_of_the_same_job_is_taken_over_at_once(self, here):
    # Before: a lock of another host was refused at once ("in use by host node-b ... pass --lock_wait_s=720"), so a
    # job requeued onto another node failed (and one that waited took 10 minutes). A live holder here (this process)
    # is a process of a start SLURM ended all the same: it stops at its next heartbeat, finding its lock taken over.
    workdir = self.create_tempdir().full_path
    _plant_lock(workdir, {'cluster': 's2s', 'job_id': '4242', 'restart': 0}, here=here)
    start = time.monotonic()
    with mock.patch.dict(os.environ, _slurm_env(restart=1), clear=False):
      with self.assertLogs(level='WARNING') as logs:
        with workdir_lock.WorkdirLock(workdir):
          self.assertLess(time.monotonic() - start, 5)
          mine = _lock(workdir)
          self.assertEqual(mine['pid'], os.getpid())
          self.assertEqual(mine['slurm'], {'cluster': 's2s', 'job_id': '4242', 'restart': 1})
    self.assertRegex(
      '\n'.join(logs.output),
      r'Taking over the lock of host \S+, pid \d+ \(SLURM job 4242, restart 0\), started .* \(it was left by restart 0 '
      r'of this SLURM job 4242, which was requeued \(this is restart 1;',
    )

  @parameterized.named_parameters(
    ('the_same_start', {'cluster': 's2s', 'job_id': '4242', 'restart': 1}, _slurm_env(restart=1)),
    ('a_later_start', {'cluster': 's2s', 'job_id': '4242', 'restart': 2}, _slurm_env(restart=1)),
    ('another_job', {'cluster': 's2s', 'job_id': '4241', 'restart': 0}, _slurm_env(restart=1)),
    ('another_cluster', {'cluster': 'other', 'job_id': '4242', 'restart': 0}, _slurm_env(restart=1)),
    ('a_holder_outside_slurm', None, _slurm_env(restart=1)),
    ('a_starter_outside_slurm', {'cluster': 's2s', 'job_id': '4242', 'restart': 0}, {}),
  )
  def test_any_other_lock_of_another_host_is_still_refused(self, holder_job, env):
    workdir = self.create_tempdir().full_path
    holder = _plant_lock(workdir, holder_job)
    environ = {**_outside_slurm(), **env}
    with mock.patch.dict(os.environ, environ, clear=True):
      with self.assertRaisesRegex(workdir_lock.WorkdirBusyError, r'in use by host node-b, pid 4321.*--lock_wait_s='):
        with workdir_lock.WorkdirLock(workdir):
          pass
    self.assertEqual(_lock(workdir), holder)

  def test_a_lock_and_a_start_record_name_the_slurm_job_and_its_restart(self):
    workdir = self.create_tempdir().full_path
    with mock.patch.dict(os.environ, _slurm_env(job_id='77'), clear=False):  # a first start: no restart count
      os.environ.pop('SLURM_RESTART_COUNT', None)
      with workdir_lock.WorkdirLock(workdir):
        self.assertEqual(_lock(workdir)['slurm'], {'cluster': 's2s', 'job_id': '77', 'restart': 0})
      record = provenance._start_record(120, 'abc', False)  # pylint: disable=protected-access
      self.assertEqual(record['slurm'], {'cluster': 's2s', 'job_id': '77', 'restart': 0})
    with mock.patch.dict(os.environ, _outside_slurm(), clear=True):
      with workdir_lock.WorkdirLock(workdir):
        self.assertIsNone(_lock(workdir)['slurm'])
      self.assertNotIn('slurm', provenance._start_record(0, 'abc', False))  # pylint: disable=protected-access


_SCONTROL = """#!/bin/sh
echo "$@" >> "$SCONTROL_CALLS"
case "$1" in
  show) [ -n "$SCONTROL_FAIL" ] && { echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1; }
        restarts=$(cat "$SCONTROL_CALLS.restarts" 2>/dev/null || echo "$SCONTROL_RESTARTS")
        echo "JobId=$4 JobName=base JobState=$SCONTROL_STATE Reason=None Requeue=1 Restarts=$restarts" ;;
  requeue) [ -n "$SCONTROL_REQUEUE_FAIL" ] || exit 0
           echo 'scontrol: error: Requested operation is presently disabled for job '"$2" >&2
           [ "$SCONTROL_REQUEUE_FAIL" = meanwhile ] && echo "$((SCONTROL_RESTARTS + 1))" > "$SCONTROL_CALLS.restarts"
           exit 1 ;;
esac
"""


class StoppedJobTest(parameterized.TestCase):
  """run_job in a SLURM job whose run stopped on a signal (it exits 143 itself here; scontrol is a stand-in that
  answers with a given state and records its calls)."""

  def _run_job(self, state, restarts, procid=0, fail=False, requeue_fails=''):
    folder = self.create_tempdir().full_path
    scontrol, calls = os.path.join(folder, 'scontrol'), os.path.join(folder, 'calls')
    with open(scontrol, 'w') as f:
      f.write(_SCONTROL)
    os.chmod(scontrol, 0o755)
    env = {
      **_slurm_env(job_id='88', SLURM_PROCID=str(procid)),
      'SUBMITIT_EXECUTOR': 'slurm',
      'PATH': f'{folder}{os.pathsep}{os.environ["PATH"]}',
      'SCONTROL_CALLS': calls,
      'SCONTROL_STATE': state,
      'SCONTROL_RESTARTS': str(restarts),
      'SCONTROL_FAIL': '1' if fail else '',
      'SCONTROL_REQUEUE_FAIL': requeue_fails,  # 'always', or 'meanwhile': SLURM requeued the job itself
    }
    log = os.path.join(folder, 'base.log')
    stopped = launch.stopped_code(signal.SIGTERM)
    with mock.patch.dict(os.environ, env):
      try:
        result = launch.run_job([sys.executable, '-c', f'import sys; sys.exit({stopped})'], log)
      except SystemExit as e:
        result = f'exit {e.code}'
      with open(launch.task_log(log)) as f:  # (task P > 0 writes base.taskP.log)
        text = f.read()
    called = _text(calls).splitlines()
    return result, text, called

  def test_a_job_still_running_after_the_warning_requeues_itself_and_leaves_no_result(self):
    # Before: the job returned 143 (its result: "stopped by SIGTERM"), was not requeued, and the sweep counted it
    # as failed.
    result, log, calls = self._run_job('RUNNING', 0)
    self.assertEqual(result, f'exit {launch.REQUEUED_EXIT}')
    self.assertEqual(calls, ['show job -o 88', 'requeue 88'])
    self.assertIn('SLURM job 88 (restart 0): the run stopped on SIGTERM while the job was running: requeued it', log)

  def test_a_job_slurm_requeued_leaves_no_result_and_is_not_requeued_again(self):
    result, log, calls = self._run_job('COMPLETING', 1)
    self.assertEqual(result, f'exit {launch.REQUEUED_EXIT}')
    self.assertEqual(calls, ['show job -o 88'])
    self.assertIn('SLURM requeued the job (COMPLETING, restarts 1)', log)

  def test_other_tasks_leave_the_requeue_to_task_0(self):
    result, log, calls = self._run_job('RUNNING', 0, procid=1)
    self.assertEqual(result, f'exit {launch.REQUEUED_EXIT}')
    self.assertEqual(calls, ['show job -o 88'])
    self.assertIn('while the job was running; task 0 requeues it', log)

  @parameterized.named_parameters(('cancelled', 'CANCELLED', False), ('scontrol_failing', 'RUNNING', True))
  def test_a_job_that_ends_reports_its_stopped_run(self, state, fail):
    result, log, _ = self._run_job(state, 0, fail=fail)
    self.assertEqual(result, launch.stopped_code(signal.SIGTERM))
    expected = 'could not say what becomes of the job (slurm_load_jobs error' if fail else f'job ends ({state})'
    self.assertIn(expected, log)

  def test_a_refused_requeue_reports_the_stop_unless_slurm_requeued_the_job_meanwhile(self):
    result, log, calls = self._run_job('RUNNING', 0, requeue_fails='always')
    self.assertEqual(result, launch.stopped_code(signal.SIGTERM))
    self.assertEqual(calls, ['show job -o 88', 'requeue 88', 'show job -o 88'])
    self.assertIn('requeueing it failed (scontrol: error: Requested operation is presently disabled', log)
    result, log, _ = self._run_job('RUNNING', 0, requeue_fails='meanwhile')
    self.assertEqual(result, f'exit {launch.REQUEUED_EXIT}')
    self.assertIn('while the job was running; SLURM requeued it meanwhile', log)

  def test_what_a_job_does_after_its_run_stopped(self):
    for state, restarts, restart, expected in (
      ('RUNNING', 0, 0, 'requeue'),  # scancel --signal=TERM, a time-limit or preemption warning
      ('RUNNING', 2, 2, 'requeue'),
      ('COMPLETING', 1, 0, 'requeued'),  # scontrol requeue, a preemption in REQUEUE mode
      ('PENDING', 3, 2, 'requeued'),
      ('COMPLETING', 0, 0, 'end'),  # scancel
      ('CANCELLED', 0, 0, 'end'),
      ('TIMEOUT', 1, 1, 'end'),
    ):
      self.assertEqual(slurm.after_stop(state, restarts, restart), expected, (state, restarts, restart))


class SlurmTrainScriptTest(parameterized.TestCase):
  """scripts/slurm_train.sh's decision after its run, with stand-ins for srun (exits with a given status) and
  scontrol (records its calls); the real thing: tests/cluster_requeue_test.py."""

  def _run(self, *args, srun_exit=0, done=False):
    folder = self.create_tempdir().full_path
    stand_ins = {'srun': f'exit {srun_exit}', 'scontrol': f'echo "$@" >> {folder}/calls'}
    for name, body in stand_ins.items():
      with open(os.path.join(folder, name), 'w') as f:
        f.write(f'#!/bin/sh\n{body}\n')
      os.chmod(os.path.join(folder, name), 0o755)
    workdir = os.path.join(folder, 'run')
    os.makedirs(workdir)
    if done:
      fileio.write_text(os.path.join(workdir, 'DONE'), 'done\n')
    env = {**os.environ, 'PATH': f'{folder}{os.pathsep}{os.environ["PATH"]}', 'SLURM_JOB_ID': '99'}
    args = [a.replace('WORKDIR', workdir) for a in args]
    done_ = subprocess.run(
      ['bash', os.path.join(testutil.ROOT, 'scripts', 'slurm_train.sh'), *args],
      env=env,
      capture_output=True,
      text=True,
      check=False,
    )
    calls = os.path.join(folder, 'calls')
    return done_, (_text(calls).splitlines() or [None])[0]

  @parameterized.named_parameters(('equals_form', ['--workdir=WORKDIR']), ('space_form', ['--workdir', 'WORKDIR']))
  def test_a_run_that_stopped_before_its_end_requeues_the_job(self, workdir_args):
    done, requeue = self._run('--config=experiments/default.py', *workdir_args)
    self.assertEqual(done.returncode, 0, done.stderr)
    self.assertEqual(requeue, 'requeue 99')
    self.assertIn('SLURM job 99 (restart 0): the run stopped with a checkpoint before its end', done.stdout)

  def test_a_finished_or_failed_run_ends_the_job(self):
    done, requeue = self._run('--config=c.py', '--workdir=WORKDIR', done=True)
    self.assertEqual((done.returncode, requeue), (0, None))
    self.assertIn('the run is done', done.stdout)
    done, requeue = self._run('--config=c.py', '--workdir=WORKDIR', srun_exit=1)
    self.assertEqual((done.returncode, requeue), (1, None))
    self.assertIn('the run failed (exit status 1): not requeued', done.stdout)

  def test_without_a_workdir_it_says_what_to_give(self):
    done, requeue = self._run('--config=c.py')
    self.assertEqual((done.returncode, requeue), (2, None))
    self.assertIn('give the run its folder: --workdir=DIR', done.stderr)


if __name__ == '__main__':
  absltest.main()
