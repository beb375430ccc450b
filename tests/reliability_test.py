"""Reliability: kills, preemption signals, damaged checkpoints, non-finite values, stray writes."""
import functools
import json
import os
import shutil
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
import optax
import orbax.checkpoint as ocp
import psutil
import pytest

import subprocess_env
from s2s_jax import checkpointing
from s2s_jax import models
from s2s_jax import steps
from s2s_jax import train
from s2s_jax import workdir as workdir_lib
from s2s_jax import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import default  # pylint: disable=g-import-not-at-top,wrong-import-position


def _env(**extra):
  return dict(os.environ, XLA_FLAGS=subprocess_env.xla_flags(), JAX_PLATFORMS='cpu', **extra)


def _tiny(data_dir, **overrides):
  config = default.get_config('size=tiny')
  config.data.data_dir = data_dir
  for k, v in overrides.items():
    config[k] = v
  return config


def _small_state(lr=0.1):
  model = models.Seq2Seq(models.Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=9, embed_dim=4, hidden_dim=8,
                                               attention='luong', max_src_len=5))
  return steps.create_train_state(jax.random.PRNGKey(0), model, optax.sgd(lr), 5, 4)


_BATCH = {'inputs': np.array([[5, 6, 3, 0, 0]] * 2, np.int32), 'inputs_mask': np.array([[1, 1, 1, 0, 0]] * 2),
          'targets': np.array([[7, 8, 3, 0]] * 2, np.int32)}


class NonFiniteTest(parameterized.TestCase):

  def _nan_state(self):
    state = _small_state()
    return state.replace(params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), state.params))

  def test_the_first_non_finite_step_is_recorded_on_device(self):
    step = jax.jit(functools.partial(steps.train_step, axis_name=None))
    state, _ = step(_small_state(), _BATCH)
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


class DamagedCheckpointTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pristine = os.path.join(absltest.get_default_test_tmpdir(), f'damaged_{os.getpid()}_{time.time()}')
    config = _tiny(os.path.join(cls.pristine, 'data'))
    train.train_and_evaluate(config, os.path.join(cls.pristine, 'run'))  # checkpoints at 20 and 40

  def _copy(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    shutil.copytree(os.path.join(self.pristine, 'run'), workdir)
    return workdir

  def _files(self, workdir, step):
    folder = os.path.join(workdir, 'checkpoints', str(step), 'state')
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]

  def test_truncated_latest_falls_back_with_a_warning(self):
    workdir = self._copy()
    for path in self._files(workdir, 40):
      with open(path, 'r+b') as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(_restore_step(checkpointing.make_manager(workdir, 2), workdir), 20)
    self.assertTrue(any('Checkpoint 40' in line and 'damaged' in line for line in logs.output), logs.output)

  @pytest.mark.slow  # end-to-end (two training runs)
  def test_a_damaged_final_checkpoint_is_moved_aside_and_trained_again(self):
    workdir = self._copy()
    for path in self._files(workdir, 40):
      with open(path, 'r+b') as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
    os.remove(os.path.join(workdir, 'DONE'))
    with self.assertLogs(level='WARNING') as logs:
      train.train_and_evaluate(_tiny(os.path.join(self.pristine, 'data')), workdir)
    self.assertTrue(any('moved it to' in line and '40.damaged-' in line for line in logs.output), logs.output)
    folders = os.listdir(os.path.join(workdir, 'checkpoints'))
    self.assertLen([d for d in folders if d.startswith('40.damaged-')], 1)  # kept for inspection
    self.assertEqual(checkpointing.make_manager(workdir, 2).all_steps(), [20, 40])  # 40 saved again
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
    params, _ = checkpointing.restore_params(workdir, 'latest')
    pristine, _ = checkpointing.restore_params(os.path.join(self.pristine, 'run'), 'latest')
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(pristine)):
      np.testing.assert_array_equal(a, b)  # retrained from 20 to the same parameters

  def test_a_checkpoint_of_another_model_is_named_as_such_and_kept(self):
    workdir = self._copy()
    mngr = checkpointing.make_manager(workdir, 2)
    with self.assertRaisesRegex(ValueError, 'does not fit this model'):
      _restore_step(mngr, workdir, hidden_dim=24)
    self.assertEqual(checkpointing.make_manager(workdir, 2).all_steps(), [20, 40])

  def test_a_cut_or_reordered_vocabulary_is_refused(self):
    from s2s_jax import inference  # pylint: disable=g-import-not-at-top
    cut = r'vocab.tgt.json has \d+ entries, but config.json says model.tgt_vocab_size=\d+'
    reordered = r'vocab.tgt.json differs from the vocabulary this run was trained with'
    for change, message in ((lambda t: t[:len(t) // 2], cut), (lambda t: t[:4] + t[4:][::-1], reordered)):
      workdir = self._copy()
      path = os.path.join(workdir, 'vocab.tgt.json')
      with open(path) as f:
        vocab = json.load(f)
      vocab['tokens'] = change(vocab['tokens'])
      with open(path, 'w') as f:
        json.dump(vocab, f)
      with self.assertRaisesRegex(ValueError, message):
        inference.load(workdir)
      os.remove(os.path.join(workdir, 'DONE'))
      with self.assertRaisesRegex(ValueError, message):  # resuming, too
        train.train_and_evaluate(_tiny(os.path.join(self.pristine, 'data'), num_train_steps=60), workdir)

  def test_partly_deleted_latest_falls_back(self):
    workdir = self._copy()
    files = sorted(self._files(workdir, 40), key=os.path.getsize)
    os.remove(files[-1])  # the largest file: array data
    with self.assertLogs(level='WARNING'):
      self.assertEqual(_restore_step(checkpointing.make_manager(workdir, 2), workdir), 20)

  def test_every_checkpoint_damaged_raises(self):
    workdir = self._copy()
    for step in (20, 40):
      for path in self._files(workdir, step):
        os.remove(path)
    with self.assertRaisesRegex(RuntimeError, 'No intact checkpoint'):
      _restore_step(checkpointing.make_manager(workdir, 2), workdir)

  def test_keep_n_rotation_removes_the_oldest_after_the_new_one_is_complete(self):
    mngr = checkpointing.make_manager(self.create_tempdir().full_path, 2)
    state = _small_state()

    class Iterator:
      def get_state(self):
        return b'{"next_index": 0}'

    for step in (10, 20, 30):
      checkpointing.save(mngr, state.replace(step=step), Iterator())
      mngr.wait_until_finished()
      self.assertEqual(mngr.all_steps(), [10, 20, 30][max(0, step // 10 - 2):step // 10])

  def test_both_managers_remove_the_temporary_folders_of_interrupted_saves(self):
    workdir = self.create_tempdir().full_path
    for folder in ('checkpoints', 'best'):
      os.makedirs(os.path.join(workdir, folder, '30.orbax-checkpoint-tmp-1796000000000000'))
    checkpointing.make_manager(workdir, 2)
    checkpointing.make_best_manager(workdir, 'eval/loss', 'min')
    self.assertEqual((os.listdir(os.path.join(workdir, 'checkpoints')), os.listdir(os.path.join(workdir, 'best'))),
                     ([], []))

  def test_best_holds_the_best_step_in_min_and_max_mode(self):
    params = _small_state().params
    for mode, values, best in (('min', [3.0, 1.0, 2.0], 20), ('max', [3.0, 1.0, 5.0], 30)):
      mngr = checkpointing.make_best_manager(self.create_tempdir().full_path, 'eval/m', mode)
      for step, value in zip((10, 20, 30), values):
        if checkpointing.is_better(value, checkpointing.best_value(mngr, 'eval/m'), mode):
          checkpointing.save_best(mngr, step, params, {'eval/m': value})
      mngr.wait_until_finished()
      self.assertEqual((mngr.best_step(), mngr.all_steps()), (best, [best]), mode)
      self.assertEqual(checkpointing.best_value(mngr, 'eval/m'), min(values) if mode == 'min' else max(values))

  def test_best_survives_checkpoint_rotation(self):
    workdir = self._copy()
    best = os.listdir(os.path.join(workdir, 'best'))
    self.assertLen([d for d in best if d.isdigit()], 1)
    self.assertEqual(sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()),
                     [20, 40])


def _restore_step(mngr, workdir, **model_changes) -> int:
  """Restores into a fresh state of the run's model (with `model_changes`) and returns the restored step."""
  from s2s_jax import config_lib, optim  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    config = config_lib.from_saved(json.load(f))
  config.model.update(model_changes)
  data = pipeline.prepare(config.data, vocab_dir=workdir)
  model = models.Seq2Seq(config_lib.model_config(config))
  state = steps.create_train_state(jax.random.PRNGKey(0), model, optim.make_optimizer(config.optim, 40),
                                   data.src_len, data.tgt_len)
  it = pipeline.train_iterator(data, config.data.batch_size, config.seed)
  return int(checkpointing.restore_or_init(mngr, state, it).step)


class CheckpointSafetyTest(absltest.TestCase):

  def test_a_failed_save_keeps_the_older_checkpoint(self):
    mngr = checkpointing.make_manager(self.create_tempdir().full_path, 1)
    state = _small_state()

    class Iterator:
      def __init__(self, fail):
        self.fail = fail

      def get_state(self):
        if self.fail:
          raise OSError('disk full')
        return b'{"next_index": 0}'  # the bytes state of a grain DataLoaderIterator

    checkpointing.save(mngr, state, Iterator(False))
    mngr.wait_until_finished()
    with self.assertRaises(Exception):
      checkpointing.save(mngr, state.replace(step=state.step + 1), Iterator(True))
      mngr.wait_until_finished()
    self.assertEqual(ocp.CheckpointManager(mngr.directory).all_steps(), [0])

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
    holder = {'host': socket.gethostname(), 'pid': os.getpid(), 'start_time': psutil.Process().create_time(),
              'heartbeat': time.time(), 'command': 'python -m s2s_jax.main --workdir=x'}
    holder.update(fields)
    with open(os.path.join(workdir, workdir_lib.LOCK_FILE), 'w') as f:
      json.dump(holder, f)

  def test_a_held_workdir_refuses_before_writing_anything(self):
    workdir = self.create_tempdir().full_path
    with workdir_lib.WorkdirLock(workdir):
      with self.assertRaisesRegex(workdir_lib.WorkdirBusyError,
                                  rf'{workdir} is in use by host {socket.gethostname()}, pid {os.getpid()}, started '):
        train.train_and_evaluate(_tiny(self.create_tempdir().full_path), workdir)
      self.assertEqual(os.listdir(workdir), [workdir_lib.LOCK_FILE])
    self.assertEqual(os.listdir(workdir), [])  # released

  def test_a_dead_holder_is_taken_over_with_a_warning(self):
    workdir = self.create_tempdir().full_path
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    for fields, reason in ((dict(pid=dead.pid), f'process {dead.pid} is gone'),
                           (dict(start_time=1.0), f'pid {os.getpid()} now belongs to another process'),
                           (dict(host='elsewhere', heartbeat=time.time() - 3600), 'its heartbeat stopped')):
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
      result = subprocess.run([sys.executable, '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny',
                               f'--workdir={workdir}'], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=300, check=False)
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertIn(f'is in use by host {socket.gethostname()}, pid {os.getpid()}', result.stderr)
    self.assertEqual(os.listdir(workdir), [])


class SignalTest(absltest.TestCase):

  def test_a_second_signal_exits_at_once(self):
    code = ('import os, signal, time\n'
            'from s2s_jax import preemption\n'
            'with preemption.Preemption() as p:\n'
            '  os.kill(os.getpid(), signal.SIGTERM)\n'
            '  assert p.requested and p.signal_name == "SIGTERM"\n'
            '  os.kill(os.getpid(), signal.SIGINT)\n'
            '  time.sleep(5)\n'
            'print("not reached")\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=60, check=False)
    self.assertEqual(result.returncode, 128 + signal.SIGINT, result.stderr)
    self.assertNotIn('not reached', result.stdout)

  @pytest.mark.slow  # end-to-end (a training subprocess)
  def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    cmd = [sys.executable, '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny', f'--workdir={workdir}',
           f'--config.data.data_dir={self.create_tempdir().full_path}', '--config.num_train_steps=100000',
           '--config.eval_every_steps=100000', '--config.checkpoint_every_steps=100000']
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
    cmd = [sys.executable, '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny', f'--workdir={workdir}',
           f'--config.data.data_dir={data_dir}']
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
    result = subprocess.run([sys.executable, '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny',
                             f'--workdir={workdir}', f'--config.data.data_dir={data_dir}'], cwd=ROOT, env=_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn('Training from step 40 to 40', result.stderr)  # only the test evaluation was left
    self.assertNotIn('Compiled the train step', result.stderr)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
    self.assertTrue(os.path.exists(os.path.join(workdir, 'eval_test.json')))



@pytest.mark.slow
class ChaosTest(absltest.TestCase):

  def test_a_kill_in_every_window_gives_identical_results(self):
    # One SIGKILL inside data preparation, a validation, a checkpoint save, training and the test evaluation, each
    # followed by a restart: parameters, best/, eval_test.json and metrics.jsonl equal an uninterrupted run's.
    result = subprocess.run([sys.executable, 'scripts/chaos_resume.py', '--config=experiments/default.py:size=tiny',
                             '--kill_at=prepare,eval,save,random,test', f'--root={self.create_tempdir().full_path}/c'],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200, check=False)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr[-3000:])
    for window in ('prepare', 'eval', 'save', 'random', 'test'):
      self.assertIn(f'kill in {window}: SIGKILL', result.stdout)
    self.assertIn('IDENTICAL', result.stdout)


if __name__ == '__main__':
  absltest.main()
