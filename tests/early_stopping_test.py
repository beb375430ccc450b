"""Tests of early stopping's count (early_stopping.py) on real workdir files: metrics.jsonl and best/."""

import json
import os

from absl.testing import absltest
import numpy as np

from s2s_jax import checkpointing
from s2s_jax import early_stopping


def _write_metrics(folder: str, lines: list[str]) -> None:
  with open(os.path.join(folder, 'metrics.jsonl'), 'w', encoding='utf-8') as f:
    f.writelines(line + '\n' for line in lines)


def _save_best(folder: str, step: int) -> None:
  mngr = checkpointing.make_best_manager(folder, 'eval/loss', 'min')
  checkpointing.save_best(mngr, step, {'w': np.zeros(2, np.float32)}, {'eval/loss': 1.0})
  mngr.wait_until_finished()
  mngr.close()


class EarlyStoppingTest(absltest.TestCase):
  def test_counts_validations_since_the_best_up_to_the_restored_step(self):
    folder = self.create_tempdir().full_path
    _write_metrics(
      folder,
      [
        json.dumps({'step': 10, 'eval/loss': 1.0}),
        json.dumps({'step': 15, 'train/loss': 2.0}),  # no validation
        '{"step": 20, "eval/lo',  # torn by a kill
        json.dumps({'step': 30, 'eval/loss': 1.5}),
        json.dumps({'step': 40, 'eval/loss': 1.5}),  # after the restored step: not counted
      ],
    )
    _save_best(folder, 10)
    self.assertTrue(early_stopping.EarlyStopping(1, [folder], first_step=30).reached())
    stopping = early_stopping.EarlyStopping(2, [folder], first_step=30)
    self.assertFalse(stopping.reached())
    stopping.record(0, 40, improved=True)  # a better validation resets the count
    self.assertFalse(stopping.reached())
    stopping.record(0, 50, improved=False)
    stopping.record(0, 60, improved=False)
    self.assertTrue(stopping.reached())

  def test_never_without_patience_or_a_best_step(self):
    folder = self.create_tempdir().full_path
    _write_metrics(folder, [json.dumps({'step': s, 'eval/loss': 1.0}) for s in (10, 20, 30)])
    self.assertFalse(early_stopping.EarlyStopping(1, [folder], first_step=30).reached())  # best/ is empty
    _save_best(folder, 10)
    self.assertFalse(early_stopping.EarlyStopping(0, [folder], first_step=30).reached())
    self.assertTrue(early_stopping.EarlyStopping(2, [folder], first_step=30).reached())

  def test_every_seed_must_have_run_out(self):
    first, second = self.create_tempdir().full_path, self.create_tempdir().full_path
    for folder in (first, second):
      _write_metrics(folder, [json.dumps({'step': s, 'eval/loss': 1.0}) for s in (10, 20)])
    _save_best(first, 10)
    _save_best(second, 20)
    stopping = early_stopping.EarlyStopping(1, [first, second], first_step=20)
    self.assertFalse(stopping.reached())
    stopping.record(0, 30, improved=False)
    stopping.record(1, 30, improved=False)
    self.assertTrue(stopping.reached())


if __name__ == '__main__':
  absltest.main()
