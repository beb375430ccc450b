"""Reliability: kills, preemption signals, damaged checkpoints, non-finite values, stray writes."""
import functools
import json
import os
import shutil
import signal
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
import pytest

from s2s_jax import checkpointing
from s2s_jax import models
from s2s_jax import steps
from s2s_jax import train
from s2s_jax import writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import default  # pylint: disable=g-import-not-at-top,wrong-import-position


def _env(**extra):
  return dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu', **extra)


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

  def test_best_survives_checkpoint_rotation(self):
    workdir = self._copy()
    best = os.listdir(os.path.join(workdir, 'best'))
    self.assertLen([d for d in best if d.isdigit()], 1)
    self.assertEqual(sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()),
                     [20, 40])


def _restore_step(mngr, workdir) -> int:
  """Restores into a fresh state of the run's model and returns the restored step."""
  from s2s_jax import config_lib, optim  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    config = config_lib.from_saved(json.load(f))
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

  def test_nothing_is_written_outside_the_workdir_and_data_dir(self):
    home, cwd = self.create_tempdir('home').full_path, self.create_tempdir('cwd').full_path
    workdir, data_dir = (os.path.join(self.create_tempdir().full_path, x) for x in ('run', 'data'))
    cmd = [sys.executable, '-m', 's2s_jax.main', f'--config={ROOT}/experiments/default.py:size=tiny',
           f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', '--config.num_train_steps=4',
           '--config.log_every_steps=2', '--config.eval_every_steps=4', '--config.checkpoint_every_steps=4']
    result = subprocess.run(cmd, cwd=cwd, env=_env(HOME=home, PYTHONPATH=ROOT), capture_output=True, text=True,
                            timeout=600, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(os.listdir(cwd), [])
    self.assertEqual([os.path.join(d, f) for d, _, fs in os.walk(home) for f in fs], [])


@pytest.mark.slow
class ChaosTest(absltest.TestCase):

  def test_three_kills_give_identical_results(self):
    result = subprocess.run([sys.executable, 'scripts/chaos_resume.py', '--config=experiments/default.py:size=tiny',
                             '--kills=3', f'--root={self.create_tempdir().full_path}/chaos'],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200, check=False)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr[-3000:])
    self.assertIn('IDENTICAL', result.stdout)


if __name__ == '__main__':
  absltest.main()
