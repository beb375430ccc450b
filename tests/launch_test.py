"""scripts/launch.py: a stopped job passes the signal on to its run and waits for it, bounded (--stop_grace_s); a
root folder another user owns or every user may write is refused; the SLURM job a run becomes (resources, Python,
folder) and how a failed run is reported. (Real sbatch jobs: tests/cluster_sweep_test.py.)"""

import os
import signal
import subprocess
import sys
import time
from unittest import mock

from absl import app
from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import pytest
import testutil

ROOT = testutil.ROOT
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import launch  # pylint: disable=g-import-not-at-top,wrong-import-position

_OTHER = r"(user '[^']*' \()?uid 12345"  # another user, named where the system knows the name
_CHILD = os.path.join(ROOT, 'tests', 'stop_child.py')
_PROBE = (  # the job process: run_one in a process of its own, which the test signals
  'import sys\n'
  'sys.path.insert(0, sys.argv[1])\n'
  'import launch\n'
  'cmd, log, grace = [sys.executable, *sys.argv[4:]], sys.argv[2], sys.argv[3]\n'
  'sys.exit(launch.run_one(cmd, log, float(grace)) if grace else launch.run_one(cmd, log))\n'
)


def _wait_for(path: str, timeout: float = 60.0) -> None:
  deadline = time.monotonic() + timeout
  while not os.path.exists(path):
    if time.monotonic() > deadline:
      raise AssertionError(f'{path} did not appear within {timeout} s')
    time.sleep(0.05)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat', encoding='utf-8') as f:  # a zombie has exited
    return f.read().rpartition(')')[2].split()[0] != 'Z'


def _start_job(folder: str, mode: str, grace: str = '') -> tuple[subprocess.Popen, str, str]:
  """run_one in a probe process (its own process group, like a terminal's job) running stop_child.py."""
  out, log = os.path.join(folder, 'out'), os.path.join(folder, 'run.log')
  env = {k: v for k, v in os.environ.items() if k != 'SUBMITIT_EXECUTOR'}
  probe = subprocess.Popen(
    [sys.executable, '-c', _PROBE, os.path.join(ROOT, 'scripts'), log, grace, _CHILD, out, mode],
    cwd=ROOT,
    env=env,
    start_new_session=True,
  )
  _wait_for(out + '.ready')
  return probe, out, log


def _cleanup(test: absltest.TestCase, probe: subprocess.Popen, out: str) -> None:
  """Kills what a failing test leaves behind: the job and its run (which may wait for a signal forever)."""
  pid = int(_read(out + '.ready'))
  for p in (probe.pid, pid):
    test.addCleanup(lambda p=p: _alive(p) and os.kill(p, signal.SIGKILL))
  test.addCleanup(lambda: probe.poll() is None and probe.kill())


def _read(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


@pytest.mark.slow  # real processes: each test about 3 s
class RunOneStopTest(parameterized.TestCase):
  @parameterized.named_parameters(('sigterm', signal.SIGTERM, 'SIGTERM'), ('sigusr2', signal.SIGUSR2, 'SIGTERM'))
  def test_the_job_waits_for_the_run_to_stop(self, sig, passed_on):
    # A cancelled or preempted job (SIGTERM; submitit's SLURM warning is SIGUSR2) passes the signal on and waits for
    # the run's stop checkpoint: the run's marker exists when the job exits, with 128 + the signal's number.
    folder = self.create_tempdir().full_path
    probe, out, log = _start_job(folder, 'stop')
    _cleanup(self, probe, out)
    os.kill(probe.pid, sig)
    code = probe.wait(timeout=60)
    self.assertTrue(os.path.exists(out), f'the job exited ({code}) before the run had stopped: {_read(log)}')
    self.assertEqual(_read(out), passed_on)
    self.assertEqual(code, 128 + sig)
    self.assertIn(f'{signal.Signals(sig).name} received: passed on to the run', _read(log))
    self.assertIn('stopped cleanly', _read(log))

  def test_ctrl_c_reaches_the_run_once(self):
    # Ctrl-C signals the terminal's whole process group, and submitit's controller sends the job SIGINT again: the
    # run hears it once (a second signal would make a training run exit at once, without its checkpoint).
    folder = self.create_tempdir().full_path
    probe, out, log = _start_job(folder, 'stop')
    _cleanup(self, probe, out)
    os.killpg(probe.pid, signal.SIGINT)
    time.sleep(0.05)
    os.kill(probe.pid, signal.SIGINT)
    code = probe.wait(timeout=60)
    self.assertTrue(os.path.exists(out), f'the job exited ({code}) before the run had stopped: {_read(log)}')
    self.assertEqual(_read(out), 'SIGINT')
    self.assertEqual(code, 130)
    self.assertIn('SIGINT received: not passed on', _read(log))

  def test_a_run_that_does_not_stop_is_killed_after_the_grace(self):
    folder = self.create_tempdir().full_path
    probe, out, log = _start_job(folder, 'ignore', grace='1')
    _cleanup(self, probe, out)
    pid = int(_read(out + '.ready'))
    start = time.monotonic()
    os.kill(probe.pid, signal.SIGTERM)
    code = probe.wait(timeout=60)
    self.assertLess(time.monotonic() - start, 20)
    self.assertEqual(code, launch.KILLED)
    self.assertFalse(_alive(pid))
    self.assertIn('did not stop within 1 s of SIGTERM: killed (exit 124)', _read(log))
    self.assertFalse(os.path.exists(out))

  def test_a_cancelled_local_job_lets_its_run_stop(self):
    # submitit's LocalJob.cancel() sends SIGINT to its controller, which sends SIGINT to the job and kills it a second
    # later: the run, told once, still finishes its stop checkpoint.
    import submitit  # pylint: disable=g-import-not-at-top

    folder = self.create_tempdir().full_path
    out = os.path.join(folder, 'out')
    executor = submitit.LocalExecutor(folder=os.path.join(folder, '.submitit'))
    executor.update_parameters(timeout_min=5)
    job = executor.submit(launch.run_one, [sys.executable, _CHILD, out, 'stop'], os.path.join(folder, 'run.log'))
    _wait_for(out + '.ready')
    job.cancel()
    _wait_for(out, timeout=30)
    self.assertEqual(_read(out), 'SIGINT')


def _sbatch_script(test: absltest.TestCase, **flag_values) -> list[str]:
  """The #SBATCH lines of the script launch.executor() would submit for a run named 'attention=luong' under the
  given launch flags (--executor=slurm)."""
  # submitit only checks that an `srun` exists (shutil.which) before it writes a script: a stand-in lets this run
  # where SLURM is not installed; nothing is submitted.
  bin_dir = test.create_tempdir().full_path
  with open(os.path.join(bin_dir, 'srun'), 'w', encoding='utf-8') as f:
    f.write('#!/bin/sh\nexit 1\n')
  os.chmod(os.path.join(bin_dir, 'srun'), 0o755)
  with (
    mock.patch.dict(os.environ, {'PATH': f'{os.environ["PATH"]}{os.pathsep}{bin_dir}'}),
    flagsaver.flagsaver(executor='slurm', **flag_values),
  ):
    executor = launch.executor(test.create_tempdir().full_path)
    executor.update_parameters(name='attention=luong')
    text = executor._executor._make_submission_file_text('COMMAND', 'uid')  # pylint: disable=protected-access
  return [line for line in text.splitlines() if line.startswith('#SBATCH')]


class SlurmJobTest(absltest.TestCase):
  def test_a_run_asks_for_no_gpu_one_cpu_and_runs_in_the_repository(self):
    # launch.py asked for one GPU by default, which every sbatch on a CPU-only cluster rejects: "Invalid generic
    # resource (gres) specification".
    lines = _sbatch_script(self)
    self.assertEmpty([line for line in lines if '--gpu' in line or '--gres' in line], lines)
    self.assertEmpty([line for line in lines if '--mem' in line], lines)
    for expected in (
      '--cpus-per-task=1',
      '--nodes=1',
      '--ntasks-per-node=1',
      f'--chdir={ROOT}',
      '--export=ALL',
      '--job-name=attention=luong',
      '--time=240',
      '--requeue',  # (a stopped job starts again: run_job, tests/requeue_test.py)
    ):
      self.assertIn(f'#SBATCH {expected}', lines)

  def test_the_resource_flags_reach_sbatch(self):
    lines = _sbatch_script(self, gpus=2, cpus_per_task=4, mem='16G', nodes=2, tasks_per_node=2, partition='gpu')
    for expected in (
      '--gpus-per-node=2',
      '--cpus-per-task=4',
      '--mem=16G',
      '--nodes=2',
      '--ntasks-per-node=2',
      '--partition=gpu',
    ):
      self.assertIn(f'#SBATCH {expected}', lines)

  def test_bad_resource_flags_are_refused(self):
    with self.assertRaisesRegex(flags.IllegalFlagValueError, '--mem takes sbatch --mem values'):
      with flagsaver.flagsaver(mem='lots'):
        pass
    with self.assertRaisesRegex(flags.IllegalFlagValueError, 'gpus'):
      with flagsaver.flagsaver(gpus=-1):
        pass
    with flagsaver.flagsaver(executor='local', tasks_per_node=2):
      with self.assertRaisesRegex(app.UsageError, r'--nodes=1 --tasks_per_node=2: .* needs --executor=slurm'):
        launch.executor(self.create_tempdir().full_path)

  def test_slurm_without_its_commands_is_refused_in_one_line(self):
    with mock.patch.dict(os.environ, {'PATH': self.create_tempdir().full_path}), flagsaver.flagsaver(executor='slurm'):
      with self.assertRaisesRegex(app.UsageError, r"^--executor=slurm: SLURM's commands \(srun, sbatch\) are not on"):
        launch.executor(self.create_tempdir().full_path)


class RunJobTest(absltest.TestCase):
  def test_a_failed_run_fails_the_job_and_a_stopped_one_does_not(self):
    log = os.path.join(self.create_tempdir().full_path, 'run.log')
    self.assertEqual(launch.run_job([sys.executable, '-c', 'print("fine")'], log), 0)
    with self.assertRaisesRegex(launch.RunFailed, '^the run exited with code 3$'):
      launch.run_job([sys.executable, '-c', 'import sys; print("broken"); sys.exit(3)'], log)
    self.assertEqual(_read(log), 'fine\nbroken\n')
    stopped = launch.stopped_code(signal.SIGTERM)  # (resumable: the driver reads it as a result, not an error)
    self.assertEqual(launch.run_job([sys.executable, '-c', f'import sys; sys.exit({stopped})'], log), stopped)

  def test_every_task_of_a_job_has_its_own_log(self):
    log = '/root/attention=luong.log'
    self.assertEqual(launch.task_log(log), log)
    with mock.patch.dict(os.environ, {'SUBMITIT_EXECUTOR': 'slurm', 'SLURM_PROCID': '0'}):
      self.assertEqual(launch.task_log(log), log)
    with mock.patch.dict(os.environ, {'SUBMITIT_EXECUTOR': 'slurm', 'SLURM_PROCID': '3'}):
      self.assertEqual(launch.task_log(log), '/root/attention=luong.task3.log')
    with mock.patch.dict(os.environ, {'SUBMITIT_EXECUTOR': 'local', 'SLURM_PROCID': '3'}):  # (a driver inside srun)
      self.assertEqual(launch.task_log(log), log)


@pytest.mark.slow  # submitit's local jobs: real processes (about 5 s)
class OutcomeTest(absltest.TestCase):
  def test_a_failed_run_is_reported_with_its_job_and_log_tail(self):
    import submitit  # pylint: disable=g-import-not-at-top

    folder = self.create_tempdir().full_path
    executor = submitit.AutoExecutor(folder=os.path.join(folder, '.submitit'), cluster='local')
    executor.update_parameters(timeout_min=5)
    log = os.path.join(folder, 'broken.log')
    script = 'import sys\nfor i in range(30): print("line", i)\nsys.exit("config.x is not valid")\n'
    failed = executor.submit(launch.run_job, [sys.executable, '-c', script], log)
    fine = executor.submit(launch.run_job, [sys.executable, '-c', 'pass'], os.path.join(folder, 'fine.log'))
    self.assertEqual(launch.outcome(failed), 1)
    self.assertEqual(launch.outcome(fine), 0)
    report = launch.failure_report(failed, log, 1)
    self.assertStartsWith(report, f'FAILED (exit 1); local job {failed.job_id}; last lines of {log}:\n')
    self.assertEndsWith(report, '    line 29\n    config.x is not valid')
    self.assertNotIn('line 14\n', report)  # (15 lines: 16-29 and the error)
    broken = executor.submit(launch.run_job, [sys.executable, '-c', 'pass'], os.path.join(folder, 'no', 'dir.log'))
    code = launch.outcome(broken)  # the job itself failed (its log cannot be opened): no run exit code
    self.assertRegex(code, r'^job failed: FileNotFoundError: .*/no/dir\.log')
    report = launch.failure_report(broken, os.path.join(folder, 'no', 'dir.log'), code)
    self.assertRegex(report, rf'^FAILED \(job failed: .*\); local job {broken.job_id}; last lines of .*_log\.err:\n')
    self.assertIn('FileNotFoundError', report)


class RootTest(absltest.TestCase):
  def test_a_root_every_user_may_write_is_refused(self):
    root = self.create_tempdir().full_path
    os.chmod(root, 0o777)
    with self.assertRaisesRegex(app.UsageError, r'is writable by every user \(mode 777\).*chmod o-w'):
      launch.prepare_root(root)
    os.chmod(root, 0o770)  # group-writable: a shared project folder
    self.assertEqual(launch.prepare_root(root), root)
    os.makedirs(os.path.join(root, '.submitit'), mode=0o700)
    os.chmod(os.path.join(root, '.submitit'), 0o703)
    with self.assertRaisesRegex(app.UsageError, r'\.submitit is writable by every user'):
      launch.prepare_root(root)

  def test_a_new_root_is_created(self):
    root = os.path.join(self.create_tempdir().full_path, 'a', 'b')
    self.assertEqual(launch.prepare_root(root), root)
    self.assertTrue(os.path.isdir(root))

  @absltest.skipIf(os.geteuid() != 0, 'needs root to give a folder to another user')
  def test_a_root_of_another_user_is_refused(self):
    root = self.create_tempdir().full_path
    os.chown(root, 12345, 12345)
    with self.assertRaisesRegex(app.UsageError, f'belongs to {_OTHER}, not to you .*choose a folder of your own'):
      launch.prepare_root(root)
    os.chown(root, 0, 0)
    os.makedirs(os.path.join(root, '.submitit'))
    os.chown(os.path.join(root, '.submitit'), 12345, 12345)  # a planted pickle folder
    with self.assertRaisesRegex(app.UsageError, rf'\.submitit belongs to {_OTHER}'):
      launch.prepare_root(root)
    link = os.path.join(self.create_tempdir().full_path, 'link')  # another user's link could be pointed elsewhere
    os.symlink(self.create_tempdir().full_path, link)
    os.lchown(link, 12345, 12345)
    with self.assertRaisesRegex(app.UsageError, f'{link} belongs to {_OTHER}'):
      launch.prepare_root(link)
    os.lchown(link, 0, 0)  # root's (an administrator's) link is fine
    self.assertEqual(launch.prepare_root(link), link)


@pytest.mark.slow  # two scripts started (about 8 s)
@absltest.skipIf(os.geteuid() != 0, 'needs root to give a folder to another user')
class ScriptsRefuseRootTest(absltest.TestCase):
  def test_sweep_and_tune_refuse_another_users_root(self):
    root = self.create_tempdir().full_path
    os.chown(root, 12345, 12345)
    for script, flag in (
      ('sweep.py', '--sweep=experiments/sweeps/smoke.py'),
      ('tune.py', '--space=experiments/search/smoke.py'),
    ):
      result = testutil.run(os.path.join(ROOT, 'scripts', script), flag, f'--root={root}', timeout=300)
      self.assertNotEqual(result.returncode, 0)
      self.assertRegex(result.stderr, f'--root={root}: {root} belongs to {_OTHER}')
      self.assertEqual(os.listdir(root), [])


if __name__ == '__main__':
  absltest.main()
