"""Reliability: kills, preemption signals, damaged checkpoints, non-finite values, stray writes."""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import psutil
import pytest

import testutil
from s2s_jax import checkpointing
from s2s_jax import steps
from s2s_jax import train
from s2s_jax import workdir as workdir_lib
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
      train._log_train(None, 20, sums, 0.1, 1.0, None, last_checkpoint=10, skip_nonfinite=False, compile_s=0.0)

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


class WorkdirLockTest(absltest.TestCase):
  def _lock(self, workdir, **fields):
    holder = {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'start_time': psutil.Process().create_time(),
      'heartbeat': time.time(),
      'command': 'python -m s2s_jax.main --workdir=x',
    }
    holder.update(fields)
    with open(os.path.join(workdir, workdir_lib.LOCK_FILE), 'w') as f:
      json.dump(holder, f)

  def test_a_held_workdir_refuses_before_writing_anything(self):
    workdir = self.create_tempdir().full_path
    with workdir_lib.WorkdirLock(workdir):
      with self.assertRaisesRegex(
        workdir_lib.WorkdirBusyError,
        rf'{workdir} is in use by host {socket.gethostname()}, pid {os.getpid()}, started ',
      ):
        train.train_and_evaluate(_tiny(self.create_tempdir().full_path), workdir)
      self.assertEqual(os.listdir(workdir), [workdir_lib.LOCK_FILE])
    self.assertEqual(os.listdir(workdir), [])  # released

  def test_a_dead_holder_is_taken_over_with_a_warning(self):
    workdir = self.create_tempdir().full_path
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    for fields, reason in (
      (dict(pid=dead.pid), f'process {dead.pid} is gone'),
      (dict(start_time=1.0), f'pid {os.getpid()} now belongs to another process'),
      (dict(host='elsewhere', heartbeat=time.time() - 3600), 'its heartbeat stopped'),
    ):
      self._lock(workdir, **fields)
      self.assertIsNone(workdir_lib.lock_holder(workdir))
      with self.assertLogs(level='WARNING') as logs:
        with workdir_lib.WorkdirLock(workdir):
          self.assertEqual(workdir_lib.lock_holder(workdir)['pid'], os.getpid())
      self.assertIn(reason, '\n'.join(logs.output))

  def test_a_live_lock_of_another_host_is_refused_with_instructions(self):
    workdir = self.create_tempdir().full_path
    self._lock(workdir, host='elsewhere', pid=1)
    with self.assertRaisesRegex(workdir_lib.WorkdirBusyError, r'host elsewhere, pid 1.*if that job is gone, delete'):
      with workdir_lib.WorkdirLock(workdir):
        pass

  def test_main_exits_non_zero_naming_the_holder(self):
    workdir = self.create_tempdir().full_path
    with workdir_lib.WorkdirLock(workdir):
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
