"""Reliability: kills, preemption signals, damaged checkpoints, non-finite values, stray writes."""

import fcntl
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import psutil
import pytest
import testutil

from s2s_jax import checkpointing
from s2s_jax import fileio
from s2s_jax import steps
from s2s_jax import train
from s2s_jax import workdir as workdir_lib
from s2s_jax import workdir_lock
from s2s_jax import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _env(**extra):
  return testutil.env(**extra)


def _tiny(data_dir, **overrides):
  return testutil.tiny_config(data_dir, **overrides)


_BATCH = {
  'inputs': np.array([[5, 6, 3, 0, 0]] * 2, np.int32),
  'inputs_mask': np.array([[1, 1, 1, 0, 0]] * 2),
  'targets': np.array([[7, 8, 3, 0]] * 2, np.int32),
}


class NonFiniteTest(parameterized.TestCase):
  def _nan_state(self):
    state = testutil.small_state()
    return state.replace(params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.params))

  def test_the_first_non_finite_step_is_recorded_on_device(self):
    step = jax.jit(functools.partial(steps.train_step, axis_name=None))
    state, _ = step(testutil.small_state(), _BATCH)
    self.assertEqual(int(state.log_sums['first_nonfinite_step']), -1)
    bad = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
    bad, _ = step(bad, _BATCH)
    bad, _ = step(bad, _BATCH)
    self.assertEqual(int(bad.log_sums['first_nonfinite_step']), 2)
    self.assertEqual(int(bad.log_sums['steps']), 3)

  def test_skipping_keeps_the_parameters_and_counts(self):
    state = self._nan_state()
    new, _ = jax.jit(functools.partial(steps.train_step, axis_name=None, skip_nonfinite=True))(state, _BATCH)
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
    self.assertEqual((int(new.log_sums['skipped']), int(new.step)), (1, 1))
    self.assertEqual(float(new.log_sums['num_tokens']), 0.0)  # a skipped update adds nothing to the sums

  def test_stop_names_the_step_and_the_last_good_checkpoint(self):
    sums = jax.device_get(steps.empty_log_sums())
    sums.update(first_nonfinite_step=17, steps=10)
    with self.assertRaisesRegex(FloatingPointError, r'at step 17; the last good checkpoint is step 10'):
      train._train_scalars(sums, 1.0, 0.1, None, last_checkpoint=10, skip_nonfinite=False)

  def test_no_checkpoint_with_non_finite_values(self):
    mngr = checkpointing.make_manager(self.create_tempdir().full_path, 2)
    with self.assertRaisesRegex(FloatingPointError, 'Refusing to checkpoint non-finite parameters at step 0'):
      checkpointing.save(mngr, self._nan_state(), data_iter=None)
    self.assertEqual(mngr.all_steps(), [])

  def test_a_diverging_run_stops_without_writing_bad_checkpoints(self):
    workdir = self.create_tempdir().full_path
    config = _tiny(self.create_tempdir().full_path, log_every_steps=5, checkpoint_every_steps=5)
    config.optim.update(learning_rate=1e30, grad_clip_norm=0.0, warmup_steps=0)
    with self.assertRaisesRegex(FloatingPointError, r'Non-finite training loss or gradient at step \d+'):
      train.train_and_evaluate(config, workdir)
    mngr = checkpointing.make_manager(workdir, 2)
    for step in mngr.all_steps():
      params, _ = checkpointing.restore_params(workdir, str(step))
      self.assertTrue(checkpointing.all_finite(params), step)


class CheckpointSafetyTest(absltest.TestCase):
  def test_an_interrupted_eval_write_leaves_the_previous_file_whole(self):
    from s2s_jax import evaluation  # pylint: disable=g-import-not-at-top

    workdir = self.create_tempdir().full_path
    evaluation.write_eval(workdir, 'test', {'bleu': 12.5, 'note': 'x' * 10_000}, ['a', 'b'])
    with self.assertRaises(TypeError):  # json.dump fails after writing part of the object
      evaluation.write_eval(workdir, 'test', {'bleu': 13.0, 'note': 'y' * 10_000, 'bad': object()}, ['c', 'd'])
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      self.assertEqual(json.load(f)['bleu'], 12.5)
    with open(os.path.join(workdir, 'eval_test.hyp.txt')) as f:
      self.assertEqual(f.read(), 'a\nb\n')  # the pair stays consistent

  def test_records_after_the_resumed_step_are_dropped(self):
    workdir = self.create_tempdir().full_path
    path = os.path.join(workdir, 'metrics.jsonl')
    with open(path, 'w') as f:
      for step in (10, 20, 30):
        f.write(json.dumps({'step': step, 'train/loss': 1.0}) + '\n')
      f.write(json.dumps({'step': 20, 'test/bleu': 3.0}) + '\n')
      f.write('{"step": 40, "train/lo')  # torn by a kill
    writer = writers.MetricWriter(workdir, resume_step=20)
    writer.write_scalars(30, {'train/loss': 2.0})
    writer.close()
    with open(path) as f:
      records = [json.loads(line) for line in f]
    self.assertEqual([(r['step'], r['train/loss']) for r in records], [(10, 1.0), (20, 1.0), (30, 2.0)])


def _write_lock(workdir, **fields):
  """Writes DIR/lock.json as a holder on this host, pid namespace and boot (this process) would, with `fields` on
  top."""
  holder = {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'start_time': psutil.Process().create_time(),
    **workdir_lock.namespace(),
    'id': 'someone',
    'beat': 7,
    'heartbeat': time.time(),
    'command': 'python -m s2s_jax.main --workdir=x',
  }
  holder.update(fields)
  fileio.write_json(os.path.join(workdir, workdir_lock.LOCK_FILE), holder)  # whole, as every holder writes it
  return holder


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _wait_for(condition, timeout=20.0):
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      raise AssertionError(f'not reached in {timeout} s')
    time.sleep(0.01)


class _FailingLockWrites:
  """Makes writes of lock.json fail with EIO (`times` of them, or all while `when()` is true); other files are
  written as usual."""

  def __init__(self, times=None, when=None):
    self.times, self.when, self.failed = times, when, 0
    self._real = workdir_lock._write_json  # pylint: disable=protected-access

  def __call__(self, path, obj):
    if os.path.basename(path) == workdir_lock.LOCK_FILE and (
      (self.times is not None and self.failed < self.times) or (self.when is not None and self.when())
    ):
      self.failed += 1
      raise OSError(5, 'Input/output error (injected)', path)
    return self._real(path, obj)


class WorkdirLockTest(absltest.TestCase):
  def test_a_held_workdir_refuses_before_writing_anything(self):
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir):
      with self.assertRaisesRegex(
        workdir_lock.WorkdirBusyError,
        rf'{workdir} is in use by host {socket.gethostname()}, pid {os.getpid()}, started ',
      ):
        train.train_and_evaluate(_tiny(self.create_tempdir().full_path), workdir)
      self.assertEqual(os.listdir(workdir), [workdir_lock.LOCK_FILE])
    self.assertEqual(os.listdir(workdir), [])  # released

  def test_the_lock_records_the_pid_namespace_the_boot_and_a_heartbeat_counter(self):
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir, heartbeat_s=0.02):
      holder = _read_json(os.path.join(workdir, workdir_lock.LOCK_FILE))
      self.assertEqual(holder['pid_ns'], os.stat('/proc/self/ns/pid').st_ino)
      with open('/proc/sys/kernel/random/boot_id') as f:
        self.assertEqual(holder['boot_id'], f.read().strip())
      self.assertEqual(holder['beat'], 0)
      _wait_for(lambda: _read_json(os.path.join(workdir, workdir_lock.LOCK_FILE))['beat'] >= 3)

  def test_a_dead_holder_of_this_host_namespace_and_boot_is_taken_over_with_a_warning(self):
    workdir = self.create_tempdir().full_path
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    for fields, reason in (
      (dict(pid=dead.pid), f'process {dead.pid} is gone'),
      (dict(start_time=1.0), f'pid {os.getpid()} now belongs to another process'),
    ):
      _write_lock(workdir, **fields)
      self.assertIsNone(workdir_lock.lock_holder(workdir))
      with self.assertLogs(level='WARNING') as logs:
        with workdir_lock.WorkdirLock(workdir):
          self.assertEqual(workdir_lock.lock_holder(workdir)['pid'], os.getpid())
      self.assertIn(reason, '\n'.join(logs.output))

  def test_pids_of_another_pid_namespace_or_boot_are_not_looked_up(self):
    """Two containers with one host name: the other's live run has a pid that is gone here (or belongs to another
    process). Without the namespace it was taken over at once."""
    workdir = self.create_tempdir().full_path
    for fields in (dict(pid_ns=12345), dict(boot_id='another-boot'), dict(pid_ns=None, boot_id=None)):
      _write_lock(workdir, pid=2**22 + 17, start_time=1.0, **fields)
      self.assertIsNotNone(workdir_lock.lock_holder(workdir))  # fresh by the file system's clock
      with self.assertRaisesRegex(
        workdir_lock.WorkdirBusyError, rf'in use by host {socket.gethostname()}, pid {2**22 + 17}.*--lock_wait_s='
      ):
        with workdir_lock.WorkdirLock(workdir):
          pass

  def test_a_lock_of_another_host_is_refused_at_once_whatever_its_wall_clock_says(self):
    """Its heartbeat time is an hour old by this clock (clock skew): nothing is judged from it."""
    workdir = self.create_tempdir().full_path
    holder = _write_lock(workdir, host='elsewhere', pid=1, heartbeat=time.time() - 3600)
    start = time.monotonic()
    with self.assertRaisesRegex(
      workdir_lock.WorkdirBusyError,
      r'in use by host elsewhere, pid 1.*another host, container or boot.*--lock_wait_s=\d+ .*or delete',
    ):
      with workdir_lock.WorkdirLock(workdir):
        pass
    self.assertLess(time.monotonic() - start, 5)
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    self.assertEqual(_read_json(path), holder)
    # Drivers (sweep, tune) ask lock_holder, which judges the file's age by the file system's clock (a probe file).
    self.assertEqual(workdir_lock.lock_holder(workdir), holder)
    os.utime(path, (time.time() - 700, time.time() - 700))
    self.assertIsNone(workdir_lock.lock_holder(workdir))
    self.assertEqual(sorted(os.listdir(workdir)), [workdir_lock.LOCK_FILE])  # the probe is gone

  def test_a_waiting_start_takes_over_only_when_the_counter_stands_still_for_the_expiry(self):
    workdir = self.create_tempdir().full_path
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    # A live holder: its counter advances (its wall-clock heartbeat looks an hour old: skew is ignored).
    holder = _write_lock(workdir, host='elsewhere', pid=1, heartbeat=time.time() - 3600, expires_s=0.4)
    stop = threading.Event()

    def beat():
      while not stop.wait(0.05):
        holder['beat'] += 1
        workdir_lock._write_json(path, holder)  # pylint: disable=protected-access

    beater = threading.Thread(target=beat)
    beater.start()
    try:
      with self.assertRaisesRegex(workdir_lock.WorkdirBusyError, r'counter advanced during the 1.5 s waited'):
        with workdir_lock.WorkdirLock(workdir, wait_s=1.5):
          pass
    finally:
      stop.set()
      beater.join()
    # The holder is gone: its counter stands still (its wall-clock heartbeat is fresh: no matter).
    _write_lock(workdir, host='elsewhere', pid=1, expires_s=0.4)
    with self.assertRaisesRegex(workdir_lock.WorkdirBusyError, r'did not advance during the 0.2 s waited'):
      with workdir_lock.WorkdirLock(workdir, wait_s=0.2):
        pass
    start = time.monotonic()
    with self.assertLogs(level='WARNING') as logs:
      with workdir_lock.WorkdirLock(workdir, wait_s=30):
        self.assertGreaterEqual(time.monotonic() - start, 0.4)
        self.assertEqual(_read_json(path)['pid'], os.getpid())
    self.assertIn('Taking over the lock of host elsewhere, pid 1', '\n'.join(logs.output))
    self.assertIn('its heartbeat counter stood at 7 for', '\n'.join(logs.output))

  def test_failed_heartbeat_writes_are_retried(self):
    """Before: one failed write ended the heartbeat thread silently (the lock then expired under a live run)."""
    workdir = self.create_tempdir().full_path
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    with workdir_lock.WorkdirLock(workdir, heartbeat_s=0.02, expires_s=30) as lock:
      failing = _FailingLockWrites(times=3)
      with mock.patch.object(workdir_lock, '_write_json', failing):
        beat = _read_json(path)['beat']
        _wait_for(lambda: failing.failed == 3 and _read_json(path)['beat'] >= beat + 2)
        self.assertTrue(lock._thread.is_alive())  # pylint: disable=protected-access
        self.assertIsNone(lock.unrefreshed)
        self.assertIsNone(lock.lost)

  def test_a_lock_not_refreshed_for_half_its_expiry_stops_its_holder(self):
    workdir = self.create_tempdir().full_path
    requests = []
    failing = _FailingLockWrites(when=lambda: True)
    with workdir_lock.WorkdirLock(workdir, heartbeat_s=0.02, expires_s=0.5, on_unrefreshed=requests.append) as lock:
      with mock.patch.object(workdir_lock, '_write_json', failing):
        start = time.monotonic()
        _wait_for(lambda: requests)
        self.assertGreaterEqual(time.monotonic() - start, 0.2)
        time.sleep(0.1)
      self.assertLen(requests, 1)
      self.assertRegex(
        requests[0], r'lock.json could not be refreshed for [\d.]+ s \(half its expiry of 0.5 s; last error: '
      )
      self.assertEqual(lock.unrefreshed, requests[0])
      self.assertIsNone(lock.lost)
      lock.check()  # still the owner: it stops as if preempted, with a checkpoint

  def test_a_lock_taken_over_or_removed_is_lost_and_left_alone(self):
    for takeover in (True, False):
      workdir = self.create_tempdir().full_path
      path = os.path.join(workdir, workdir_lock.LOCK_FILE)
      with workdir_lock.WorkdirLock(workdir, heartbeat_s=0.02) as lock:
        if takeover:
          other = _write_lock(workdir, host='elsewhere', pid=4242)
        else:
          os.remove(path)
        _wait_for(lambda: lock.lost)
        with self.assertRaisesRegex(
          workdir_lock.LockLost,
          'taken over by host elsewhere, pid 4242, started .*stops without writing anything more'
          if takeover
          else 'lock.json was removed; this run .* stops without writing anything more',
        ):
          lock.check()
        time.sleep(0.1)
      if takeover:
        self.assertEqual(_read_json(path), other)  # never rewritten, nor removed on exit
      else:
        self.assertFalse(os.path.exists(path))

  def test_main_exits_non_zero_naming_the_holder(self):
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir):
      result = subprocess.run(
        [sys.executable, '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny', f'--workdir={workdir}'],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
      )
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertIn(f'is in use by host {socket.gethostname()}, pid {os.getpid()}', result.stderr)
    self.assertEqual(os.listdir(workdir), [])

  def test_main_waits_lock_wait_s_for_a_lock_of_another_host(self):
    workdir = self.create_tempdir().full_path
    holder = _write_lock(workdir, host='elsewhere', pid=1)
    start = time.monotonic()
    result = testutil.run(
      '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny', f'--workdir={workdir}', '--lock_wait_s=1.5'
    )
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertIn('in use by host elsewhere, pid 1', result.stderr)
    self.assertIn(
      'did not advance during the 1.5 s waited (--lock_wait_s), less than its expiry of 600 s', result.stderr
    )
    self.assertGreaterEqual(time.monotonic() - start, 1.5)
    self.assertEqual(os.listdir(workdir), [workdir_lock.LOCK_FILE])
    self.assertEqual(_read_json(os.path.join(workdir, workdir_lock.LOCK_FILE)), holder)


def _snapshot(workdir, skip=()):
  """{relative path: (size, mtime)} of every file under `workdir` outside `skip`."""
  out = {}
  for folder, dirs, files in os.walk(workdir):
    dirs[:] = [d for d in dirs if os.path.relpath(os.path.join(folder, d), workdir) not in skip]
    for name in files:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      out[os.path.relpath(path, workdir)] = (stat.st_size, stat.st_mtime_ns)
  return out


class LostLockTest(parameterized.TestCase):
  """A training run whose workdir lock is taken over, removed or cannot be refreshed (in process, heartbeat every
  20 ms). Before: the run only logged an error and went on training, checkpointing and writing beside the new
  holder, to DONE."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = os.path.join(absltest.get_default_test_tmpdir(), f'lost_lock_data_{os.getpid()}')

  def _config(self):
    # 3000 steps, the first checkpoint at step 1500: a run that goes on after losing its lock would save one.
    return _tiny(self.data_dir, num_train_steps=3000, eval_every_steps=1500, checkpoint_every_steps=1500)

  @parameterized.parameters(True, False)
  def test_a_run_whose_lock_is_taken_over_or_removed_stops_and_writes_nothing_more(self, takeover):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    path = os.path.join(workdir, workdir_lock.LOCK_FILE)
    metrics = os.path.join(workdir, 'metrics.jsonl')
    other = {}

    def thief():
      _wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0, timeout=600)
      # Under the flock of the workdir folder, as a taking-over start holds it: without it the holder's heartbeat,
      # between reading its own lock and renaming the refreshed one into place, would undo the change (seen under
      # load: the removal was undone and the run trained on to DONE).
      guard = os.open(workdir, os.O_RDONLY)
      try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if takeover:
          other.update(_write_lock(workdir, host='elsewhere', pid=4242, command='the new holder'))
        else:
          os.remove(path)
      finally:
        os.close(guard)

    thread = threading.Thread(target=thief, daemon=True)
    thread.start()
    with mock.patch.dict(os.environ, S2S_LOCK_HEARTBEAT_S='0.02'):
      with self.assertRaisesRegex(
        workdir_lock.LockLost,
        r'taken over by host elsewhere, pid 4242, started .*: the new holder; this run \(host .*\) stops without '
        r'writing anything more'
        if takeover
        else r'lock.json was removed; this run',
      ) as raised:
        train.train_and_evaluate(self._config(), workdir)
    self.assertTrue(raised.exception.abandon)
    thread.join()
    # tensorboard/ aside: tensorboardX flushes its buffer from a thread in process; main exits at once instead.
    after = _snapshot(workdir, skip=('tensorboard',))
    time.sleep(0.3)
    self.assertEqual(_snapshot(workdir, skip=('tensorboard',)), after)
    self.assertEqual(checkpointing.saved_steps(workdir), [])  # neither checkpoints/ nor best/
    for name in ('DONE', 'eval_test.json', workdir_lib.SAVES_FILE):
      self.assertFalse(os.path.exists(os.path.join(workdir, name)), name)
    if takeover:
      self.assertEqual(_read_json(path), other)
    else:
      self.assertFalse(os.path.exists(path))

  def test_a_run_whose_lock_cannot_be_refreshed_stops_as_if_preempted(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    metrics = os.path.join(workdir, 'metrics.jsonl')
    failing = _FailingLockWrites(when=lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0)
    with (
      mock.patch.dict(os.environ, S2S_LOCK_HEARTBEAT_S='0.02', S2S_LOCK_EXPIRES_S='1'),
      mock.patch.object(workdir_lock, '_write_json', failing),
      self.assertLogs(level='WARNING') as logs,
      self.assertRaisesRegex(
        workdir_lock.LockLost,
        r'could not be refreshed for [\d.]+ s \(half its expiry of 1 s; .*stopped as if preempted',
      ) as raised,
    ):
      train.train_and_evaluate(self._config(), workdir)
    self.assertFalse(raised.exception.abandon)
    stopped = [line for line in logs.output if 'stopped at step' in line]
    self.assertLen(stopped, 1, logs.output)
    step = int(stopped[0].split('stopped at step ')[1].split()[0])
    self.assertIn('could not be refreshed', stopped[0])
    self.assertEqual([s for s, _, _ in checkpointing.saved_steps(workdir)], [step])  # the final checkpoint
    self.assertEqual(_read_json(os.path.join(workdir, workdir_lib.SAVES_FILE)), {'committed_steps': [step]})
    self.assertFalse(os.path.exists(os.path.join(workdir, 'DONE')))

  @pytest.mark.slow  # end-to-end (a training subprocess)
  def test_main_exits_75_at_once_when_its_lock_is_taken_over(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    cmd = [
      sys.executable,
      '-m',
      's2s_jax.main',
      '--config=experiments/default.py:size=tiny',
      f'--workdir={workdir}',
      f'--config.data.data_dir={self.data_dir}',
      '--config.num_train_steps=100000',
      '--config.eval_every_steps=100000',
      '--config.checkpoint_every_steps=100000',
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(S2S_LOCK_HEARTBEAT_S='0.05'), stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, 'metrics.jsonl')
    _wait_for(lambda: os.path.exists(metrics) and os.path.getsize(metrics) > 0, timeout=300)
    other = _write_lock(workdir, host='elsewhere', pid=4242, command='the new holder')
    before, lines = None, []
    for line in proc.stderr:
      lines.append(line)
      if 'taken over by host elsewhere' in line and before is None:
        before = _snapshot(workdir)
    proc.wait(timeout=60)
    stderr = ''.join(lines)
    self.assertEqual(proc.returncode, workdir_lock.EXIT_LOCK_LOST, stderr[-3000:])
    self.assertIn('taken over by host elsewhere, pid 4242, started', stderr)
    self.assertIn(': the new holder; this run', stderr)
    self.assertEqual(_snapshot(workdir), before)
    self.assertEqual(_read_json(os.path.join(workdir, workdir_lock.LOCK_FILE)), other)
    self.assertEqual(checkpointing.saved_steps(workdir), [])


class SignalTest(absltest.TestCase):
  def test_a_second_signal_exits_at_once(self):
    code = (
      'import os, signal, time\n'
      'from s2s_jax import preemption\n'
      'with preemption.Preemption() as p:\n'
      '  os.kill(os.getpid(), signal.SIGTERM)\n'
      '  assert p.requested and p.signal_name == "SIGTERM"\n'
      '  os.kill(os.getpid(), signal.SIGINT)\n'
      '  time.sleep(5)\n'
      'print("not reached")\n'
    )
    result = subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    self.assertEqual(result.returncode, 128 + signal.SIGINT, result.stderr)
    self.assertNotIn('not reached', result.stdout)

  @pytest.mark.slow  # end-to-end (a training subprocess)
  def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    cmd = [
      sys.executable,
      '-m',
      's2s_jax.main',
      '--config=experiments/default.py:size=tiny',
      f'--workdir={workdir}',
      f'--config.data.data_dir={self.create_tempdir().full_path}',
      '--config.num_train_steps=100000',
      '--config.eval_every_steps=100000',
      '--config.checkpoint_every_steps=100000',
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, 'metrics.jsonl')
    deadline = time.time() + 300
    while time.time() < deadline and not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
      time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    self.assertEqual(proc.returncode, 0, stderr[-3000:])
    self.assertIn('SIGTERM: stopped at step', stderr)
    step = checkpointing.make_manager(workdir, 2).latest_step()
    self.assertIsNotNone(step)
    self.assertIn(f'stopped at step {step} ', stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'DONE')))

  def _terminate_at(self, marker, workdir, data_dir):
    """Runs the tiny default config and sends SIGTERM when a stderr line contains `marker`; (exit code, stderr)."""
    cmd = [
      sys.executable,
      '-m',
      's2s_jax.main',
      '--config=experiments/default.py:size=tiny',
      f'--workdir={workdir}',
      f'--config.data.data_dir={data_dir}',
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
      lines.append(line)
      if marker in line:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    return proc.returncode, ''.join(lines)

  @pytest.mark.slow
  def test_sigterm_outside_the_training_loop_stops_cleanly_and_a_rerun_finishes(self):
    workdir, data_dir = (os.path.join(self.create_tempdir().full_path, x) for x in ('run', 'data'))
    code, stderr = self._terminate_at('Preparing ', workdir, data_dir)
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn('SIGTERM: stopped during data preparation; nothing is lost', stderr)
    leftovers = [d for d, _, _ in os.walk(data_dir) if os.path.basename(d).startswith('incomplete.')]
    self.assertEqual(leftovers, [])
    code, stderr = self._terminate_at('Testing the best checkpoint', workdir, data_dir)
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertIn('SIGTERM: stopped during the test evaluation', stderr)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'DONE')))
    result = subprocess.run(
      [
        sys.executable,
        '-m',
        's2s_jax.main',
        '--config=experiments/default.py:size=tiny',
        f'--workdir={workdir}',
        f'--config.data.data_dir={data_dir}',
      ],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn('Training from step 40 to 40', result.stderr)  # only the test evaluation was left
    self.assertNotIn('Compiled the train step', result.stderr)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
    self.assertTrue(os.path.exists(os.path.join(workdir, 'eval_test.json')))


@pytest.mark.slow
class ChaosTest(absltest.TestCase):
  def test_a_kill_in_every_window_gives_identical_results(self):
    # One SIGKILL inside data preparation, training, a validation, a checkpoint save and the test evaluation, each
    # followed by a restart: parameters, best/, eval_test.json and metrics.jsonl equal an uninterrupted run's. The
    # training window comes early: after a kill in the save of step 20, an idle machine may have finished training
    # (steps 20-40 take about 0.2 s), leaving no training line to kill in. 200 steps with a validation and a save
    # every 40 (not tiny's 40 and 20): on a fast machine the save window of the 40-step run could open on the final
    # save, and save, test and exit then took under the 0.2 s kill delay (the run finished unkilled: CI failure).
    result = subprocess.run(
      [
        sys.executable,
        'scripts/chaos_resume.py',
        '--config=experiments/default.py:size=tiny',
        '--override=--config.num_train_steps=200',
        '--override=--config.eval_every_steps=40',
        '--override=--config.checkpoint_every_steps=40',
        '--kill_at=prepare,random,eval,save,test',
        f'--root={self.create_tempdir().full_path}/c',
      ],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=1200,
      check=False,
    )
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr[-3000:])
    for window in ('prepare', 'eval', 'save', 'random', 'test'):
      self.assertIn(f'kill in {window}: SIGKILL', result.stdout)
    self.assertIn('IDENTICAL', result.stdout)


if __name__ == '__main__':
  absltest.main()
