"""Tests of vmapped multi-seed training (config.num_seeds)."""

import json
import os
import sys

from absl.testing import absltest
import pytest
import testutil

from s2s_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _config(data_dir, **overrides):
  return testutil.tiny_config(data_dir, constant_lr=True, **overrides)


def _records(path):
  with open(os.path.join(path, 'metrics.jsonl')) as f:
    return [
      {
        k: v
        for k, v in json.loads(line).items()
        if k != 'wall_s' and not k.endswith('_per_s') and not k.endswith('decode_s')
      }
      for line in f
    ]


@pytest.mark.slow
class SeedsTest(absltest.TestCase):
  def test_vmapped_seeds_match_single_runs_and_resume_exactly(self):
    data_dir = self.create_tempdir().full_path
    vmapped, resumed, single = (self.create_tempdir().full_path for _ in range(3))
    train.train_and_evaluate(_config(data_dir, num_seeds=2), vmapped)
    for seed in (0, 1):
      folder = os.path.join(vmapped, f'seed_{seed}')
      for name in ('config.json', 'vocab.src.json', 'metrics.jsonl', 'eval_test.json', 'eval_test.hyp.txt', 'DONE'):
        self.assertTrue(os.path.exists(os.path.join(folder, name)), (seed, name))
      with open(os.path.join(folder, 'config.json')) as f:
        self.assertEqual((json.load(f)['seed']), seed)
    # Seed 0 of the vmapped pair is the run of seed 0 alone (same batches; up to float rounding of batched
    # matmuls); seed 1 starts from another initialisation (on the same batches) and ends elsewhere.
    train.train_and_evaluate(_config(data_dir, seed=0), single)
    losses = {}
    for name, folder in (
      ('single', single),
      ('seed_0', os.path.join(vmapped, 'seed_0')),
      ('seed_1', os.path.join(vmapped, 'seed_1')),
    ):
      with open(os.path.join(folder, 'eval_test.json')) as f:
        losses[name] = json.load(f)['loss']
    self.assertAlmostEqual(losses['seed_0'], losses['single'], delta=1e-4)
    self.assertGreater(abs(losses['seed_1'] - losses['seed_0']), 1e-3)
    # Stopping at step 20 and resuming gives the same records for every seed.
    train.train_and_evaluate(_config(data_dir, num_seeds=2, num_train_steps=20), resumed)
    train.train_and_evaluate(_config(data_dir, num_seeds=2), resumed)
    for seed in (0, 1):
      got = [
        r
        for r in _records(os.path.join(resumed, f'seed_{seed}'))
        if not (r['step'] == 20 and any(k.startswith('test') for k in r))
      ]
      self.assertEqual(got, _records(os.path.join(vmapped, f'seed_{seed}')), seed)


if __name__ == '__main__':
  absltest.main()
