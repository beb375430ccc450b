"""Tests of sweep files, sweep_lib and scripts/sweep.py."""

import glob
import importlib.util
import json
import os
import socket
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import pytest
import testutil

from s2s_jax import config_checks
from s2s_jax import sweep_lib
from s2s_jax import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import sweep as sweep_script  # pylint: disable=g-import-not-at-top,wrong-import-position

SWEEPS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'experiments', 'sweeps', '*.py')))


def _load_config(path: str, arg: str):
  spec = importlib.util.spec_from_file_location('cfg', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


class SweepLibTest(absltest.TestCase):
  def test_product_zip_and_names(self):
    sweep = sweep_lib.product(sweep_lib.axis('model.cell', ['gru', 'lstm']), sweep_lib.seeds(2))
    self.assertEqual(
      sweep,
      [
        {'model.cell': 'gru', 'seed': 0},
        {'model.cell': 'gru', 'seed': 1},
        {'model.cell': 'lstm', 'seed': 0},
        {'model.cell': 'lstm', 'seed': 1},
      ],
    )
    zipped = sweep_lib.zip_(sweep_lib.axis('a.x', [1, 2]), sweep_lib.axis('b.y', [True, False]))
    self.assertEqual(zipped, [{'a.x': 1, 'b.y': True}, {'a.x': 2, 'b.y': False}])
    with self.assertRaisesRegex(ValueError, 'equal length'):
      sweep_lib.zip_(sweep_lib.axis('a', [1]), sweep_lib.axis('b', [1, 2]))
    points = sweep_lib.product(
      sweep_lib.axis('model.attention', ['luong', 'none_init']), sweep_lib.points({'num_train_steps': 5})
    )
    keys = sweep_lib.varying_keys(points)
    self.assertEqual(keys, ['model.attention'])
    self.assertEqual([sweep_lib.run_name(p, keys) for p in points], ['attention=luong', 'attention=none_init'])
    self.assertEqual(
      sweep_lib.override_flags({'model.bidirectional': True, 'optim.learning_rate': 0.01}),
      ['--config.model.bidirectional=true', '--config.optim.learning_rate=0.01'],
    )
    self.assertEqual(sweep_lib.run_name({'data.files': 'a/b c'}), 'files=a-b-c')


class SweepFilesTest(parameterized.TestCase):
  @parameterized.named_parameters(*[(os.path.basename(p)[:-3], p) for p in SWEEPS])
  def test_every_point_is_a_valid_config(self, path):
    for size in ('tiny', 'small', 'base'):
      config_file, arg, points, evaluations = sweep_script.load_sweep(
        path if path.endswith('smoke.py') else f'{path}:size={size}'
      )
      self.assertTrue(os.path.exists(os.path.join(ROOT, config_file)), config_file)
      keys = sweep_lib.varying_keys(points)
      self.assertLen({sweep_lib.run_name(p, keys) for p in points}, len(points))  # distinct run folders
      for point in points:
        config = _load_config(config_file, arg)
        for key, value in point.items():
          section, _, name = key.rpartition('.')
          (config[section] if section else config)[name] = value
        config_checks.validate(config)
      for e in evaluations:
        self.assertTrue(
          set(e)
          <= {
            'beam_size',
            'length_alpha',
            'min_len',
            'max_len_a',
            'max_len_b',
            'no_repeat_ngram_size',
            'coverage_beta',
          },
          e,
        )


@pytest.mark.slow
class SweepScriptTest(absltest.TestCase):
  def test_evaluations_and_skipping_finished_runs(self):
    root = self.create_tempdir().full_path
    sweep_file = os.path.join(root, 'decoding_sweep.py')
    with open(sweep_file, 'w') as f:
      f.write(
        "from s2s_jax import sweep_lib\nCONFIG = 'experiments/default.py'\nCONFIG_ARG = 'size=tiny'\n"
        "EVALUATIONS = [{'beam_size': 1, 'length_alpha': 0.0}, {'beam_size': 3, 'length_alpha': 1.0}]\n"
        "def get_sweep(arg=None):\n  return sweep_lib.points({'num_train_steps': 20})\n"
      )
    env = testutil.env(S2S_CACHE_DIR=f'{root}/cache')
    run = lambda: subprocess.run(
      [sys.executable, 'scripts/sweep.py', f'--sweep={sweep_file}', f'--root={root}/out'],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
    )
    first = run()
    self.assertEqual(first.returncode, 0, first.stdout + first.stderr[-2000:])
    for name in ('beam_size1_length_alpha0.0', 'beam_size3_length_alpha1.0'):
      with open(os.path.join(root, 'out', 'base', f'eval_{name}.json')) as f:
        self.assertIn('bleu', json.load(f))
    with open(os.path.join(root, 'out', 'base', 'eval_beam_size3_length_alpha1.0.json')) as f:
      self.assertEqual(json.load(f)['beam_size'], 3)
    again = run()
    self.assertEqual(again.returncode, 0)
    self.assertIn('1 already DONE, 0 to run', again.stdout)
    os.remove(os.path.join(root, 'out', 'base', 'DONE'))
    with workdir_lock.WorkdirLock(os.path.join(root, 'out', 'base')):  # as if another sweep were running it
      held = run()
    self.assertEqual(held.returncode, 0, held.stdout + held.stderr[-2000:])
    self.assertIn(f'base: skipped, its workdir is in use by host {socket.gethostname()} pid {os.getpid()}', held.stdout)
    self.assertIn('0 already DONE, 0 to run, 1 skipped (in use by another process)', held.stdout)


if __name__ == '__main__':
  absltest.main()
