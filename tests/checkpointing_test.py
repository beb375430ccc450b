"""Tests of checkpointing.py: damaged, partial and foreign checkpoints, rotation, best/, failed saves."""

import json
import os
import shutil
import time

from absl.testing import absltest
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import testutil

from s2s_jax import checkpointing
from s2s_jax import models
from s2s_jax import steps
from s2s_jax import train


def _tiny(data_dir, **overrides):
  return testutil.tiny_config(data_dir, **overrides)


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

  def test_a_checkpoint_of_another_optimizer_is_named_as_such_and_kept(self):
    workdir = self._copy()  # written with adam; sgd keeps another optimizer state (orbax fails to restore it)
    with self.assertRaisesRegex(ValueError, 'does not fit this optimizer'):
      _restore_step(checkpointing.make_manager(workdir, 2), workdir, optim_changes={'optimizer': 'sgd'})
    self.assertEqual(checkpointing.make_manager(workdir, 2).all_steps(), [20, 40])
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, 'checkpoints'))), ['20', '40'])  # nothing moved aside

  def test_a_cut_or_reordered_vocabulary_is_refused(self):
    from s2s_jax import inference  # pylint: disable=g-import-not-at-top

    cut = r'vocab.tgt.json has \d+ entries, but config.json says model.tgt_vocab_size=\d+'
    reordered = r'vocab.tgt.json differs from the vocabulary this run was trained with'
    for change, message in ((lambda t: t[: len(t) // 2], cut), (lambda t: t[:4] + t[4:][::-1], reordered)):
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
    state = testutil.small_state()

    class Iterator:
      def get_state(self):
        return b'{"next_index": 0}'

    for step in (10, 20, 30):
      checkpointing.save(mngr, state.replace(step=step), Iterator())
      mngr.wait_until_finished()
      self.assertEqual(mngr.all_steps(), [10, 20, 30][max(0, step // 10 - 2) : step // 10])

  def test_both_managers_remove_the_temporary_folders_of_interrupted_saves(self):
    workdir = self.create_tempdir().full_path
    for folder in ('checkpoints', 'best'):
      os.makedirs(os.path.join(workdir, folder, '30.orbax-checkpoint-tmp-1796000000000000'))
    checkpointing.make_manager(workdir, 2)
    checkpointing.make_best_manager(workdir, 'eval/loss', 'min')
    self.assertEqual(
      (os.listdir(os.path.join(workdir, 'checkpoints')), os.listdir(os.path.join(workdir, 'best'))), ([], [])
    )

  def test_best_holds_the_best_step_in_min_and_max_mode(self):
    params = testutil.small_state().params
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
    self.assertEqual(sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()), [20, 40])


def _restore_step(mngr, workdir, optim_changes=None, **model_changes) -> int:
  """Restores into a fresh state of the run's model and optimizer (with the changes) and returns the restored
  step."""
  from s2s_jax import config_lib  # pylint: disable=g-import-not-at-top
  from s2s_jax import optim  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import batches  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  with open(os.path.join(workdir, 'config.json')) as f:
    config = config_lib.from_saved(json.load(f))
  config.model.update(model_changes)
  config.optim.update(optim_changes or {})
  data = pipeline.prepare(config.data, vocab_dir=workdir)
  model = models.Seq2Seq(config_lib.model_config(config))
  state = steps.create_train_state(
    jax.random.PRNGKey(0), model, optim.make_optimizer(config.optim, 40), data.src_len, data.tgt_len
  )
  it = batches.train_iterator(data, config.data.batch_size, config.seed)
  return int(checkpointing.restore_or_init(mngr, state, it).step)


class FailedSaveTest(absltest.TestCase):
  def test_a_failed_save_keeps_the_older_checkpoint(self):
    mngr = checkpointing.make_manager(self.create_tempdir().full_path, 1)
    state = testutil.small_state()

    class Iterator:
      def __init__(self, fail):
        self.fail = fail

      def get_state(self):
        if self.fail:
          raise OSError('disk full')
        return b'{"next_index": 0}'  # the bytes state of a grain DataLoaderIterator

    checkpointing.save(mngr, state, Iterator(False))
    mngr.wait_until_finished()
    with self.assertRaises(Exception):  # noqa: B017  (orbax wraps the iterator's OSError in its own error types)
      checkpointing.save(mngr, state.replace(step=state.step + 1), Iterator(True))
      mngr.wait_until_finished()
    self.assertEqual(ocp.CheckpointManager(mngr.directory).all_steps(), [0])


class AverageTest(absltest.TestCase):
  def _workdir(self):
    workdir = self.create_tempdir().full_path
    self.trees = {}
    for step in (10, 20, 30):
      tree = {'a': np.full((2, 3), float(step), np.float32), 'b': {'c': np.arange(4, dtype=np.float32) * step}}
      checkpointing.save_params(os.path.join(workdir, 'best'), step, tree)
      self.trees[step] = tree
    return workdir

  def test_the_average_of_known_trees(self):
    workdir = self._workdir()
    mean, step = checkpointing.restore_params(workdir, 'avg:2')
    self.assertEqual(step, 30)
    np.testing.assert_allclose(mean['a'], np.full((2, 3), 25.0))
    np.testing.assert_allclose(mean['b']['c'], np.arange(4) * 25.0)
    mean, step = checkpointing.restore_params(workdir, 'avg:10,30')
    np.testing.assert_allclose(mean['a'], np.full((2, 3), 20.0))
    one, step = checkpointing.restore_params(workdir, 'avg:1')
    jax.tree.map(np.testing.assert_array_equal, one, self.trees[30])  # one checkpoint: itself, exactly

  def test_an_average_written_as_a_folder_reads_back(self):
    workdir = self._workdir()
    mean, step = checkpointing.average_params(workdir, '3')
    checkpointing.save_params(os.path.join(workdir, 'averaged'), step, mean)
    back, back_step = checkpointing.restore_params(workdir, 'averaged')
    self.assertEqual(back_step, 30)
    jax.tree.map(np.testing.assert_array_equal, back, mean)

  def test_a_seed_of_a_vmapped_run_averages_its_slice_of_the_stacked_states(self):
    run = self.create_tempdir().full_path
    with open(os.path.join(run, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump({'seed': 5, 'num_seeds': 3}, f)
    with ocp.CheckpointManager(
      os.path.join(run, 'checkpoints'), options=ocp.CheckpointManagerOptions(create=True)
    ) as m:
      for step in (10, 20):  # params stacked over the 3 seeds: seed k's values are step + k
        params = {'w': np.stack([np.full((2,), step + k, np.float32) for k in range(3)])}
        m.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({'params': params, 'step': step})))
      m.wait_until_finished()
    seed = os.path.join(run, 'seed_6')  # the second seed (seed 5 + 1)
    checkpointing.save_params(os.path.join(seed, 'best'), 20, {'w': np.full((2,), 21.0, np.float32)})
    mean, step = checkpointing.restore_params(seed, 'avg:2')
    self.assertEqual(step, 20)
    np.testing.assert_allclose(mean['w'], [16.0, 16.0])  # (11 + 21) / 2
    np.testing.assert_allclose(checkpointing.restore_params(seed, '10')[0]['w'], [11.0, 11.0])

  def test_bad_requests_name_what_is_saved(self):
    workdir = self._workdir()
    with self.assertRaisesRegex(ValueError, r'avg:4: .* keeps 3 checkpoint steps \(\[10, 20, 30\]\)'):
      checkpointing.restore_params(workdir, 'avg:4')
    with self.assertRaisesRegex(
      ValueError, r'step\(s\) \[40\] not saved; .* keeps 3 checkpoint steps \(\[10, 20, 30\]\)'
    ):
      checkpointing.restore_params(workdir, 'avg:10,40')
    with self.assertRaisesRegex(ValueError, 'expected avg:K or avg:STEP1,STEP2'):
      checkpointing.restore_params(workdir, 'avg:last')
    checkpointing.save_params(os.path.join(workdir, 'best'), 40, {'a': np.zeros((3, 3), np.float32), 'b': {'c': 0}})
    with self.assertRaisesRegex(ValueError, 'have different parameters'):
      checkpointing.restore_params(workdir, 'avg:2')
    with self.assertRaisesRegex(ValueError, 'or a folder of parameter checkpoints'):
      checkpointing.restore_params(workdir, 'nowhere')


if __name__ == '__main__':
  absltest.main()
