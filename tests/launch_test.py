"""scripts/launch.py: a stopped job passes the signal on to its run and waits for it, bounded (--stop_grace_s); a
root folder another user owns or every user may write is refused."""

import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest
from absl.testing import parameterized
from absl import app
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
