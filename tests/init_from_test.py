"""Tests of starting a new run from another run's parameters (--init_from / init.from_workdir, init.checkpoint)."""

import json
import os
import re

from absl.testing import absltest
import pytest
import testutil

from s2s_jax import checkpointing
from s2s_jax import config_lib


class ParseTest(absltest.TestCase):
  def test_the_checkpoint_suffix(self):
    self.assertEqual(config_lib.parse_init_from('/r/a'), ('/r/a', 'best'))
    self.assertEqual(config_lib.parse_init_from('/r/a:latest'), ('/r/a', 'latest'))
    self.assertEqual(config_lib.parse_init_from('/r/a:1200'), ('/r/a', '1200'))
    self.assertEqual(config_lib.parse_init_from('/r/a:avg:5'), ('/r/a', 'avg:5'))
    self.assertEqual(config_lib.parse_init_from('/r/a:b'), ('/r/a:b', 'best'))  # not a checkpoint: part of the path


def _final_sha(stderr: str) -> str:
  return re.findall(r'parameters at step \d+ have sha256 (\w+)', stderr)[-1]


@pytest.mark.slow
class InitFromTest(absltest.TestCase):
  def test_a_new_run_starts_from_the_source_and_a_resume_ignores_it(self):
    root = self.create_tempdir().full_path
    data = os.path.join(root, 'data')
    source = testutil.random_workdir(os.path.join(root, 'source'), data, seed=3, steps_=(20, 40))
    params, _ = checkpointing.restore_params(source, '20')
    flags_ = [
      '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny', f'--config.data.data_dir={data}',
      '--config.optim.learning_rate=0', '--config.optim.schedule=constant', '--config.optim.warmup_steps=0',
      '--config.num_train_steps=20', '--config.eval_every_steps=20', '--config.checkpoint_every_steps=20',
    ]  # fmt: skip
    work = os.path.join(root, 'fine')
    done = testutil.run(*flags_, f'--workdir={work}', f'--init_from={source}:20')
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn(f'Initialised the parameters from {source} (checkpoint 20, step 20)', done.stderr)
    # A zero learning rate keeps the parameters: the run trained from exactly the source's step-20 parameters.
    self.assertEqual(_final_sha(done.stderr), checkpointing.params_sha256(params))
    with open(os.path.join(work, 'config.json'), encoding='utf-8') as f:
      self.assertEqual(json.load(f)['init'], {'from_workdir': source, 'checkpoint': '20'})
    # A resume reads its own checkpoint: --init_from (even a missing folder) is not used again.
    done = testutil.run(
      *flags_[:-3], '--config.num_train_steps=40', '--config.eval_every_steps=20', '--config.checkpoint_every_steps=20',
      f'--workdir={work}', f'--init_from={root}/missing',
    )  # fmt: skip
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertNotIn('Initialised the parameters', done.stderr)
    self.assertEqual(_final_sha(done.stderr), checkpointing.params_sha256(params))
    # Without it a run starts from its own random initialisation.
    done = testutil.run(*flags_, f'--workdir={root}/scratch')
    self.assertNotEqual(_final_sha(done.stderr), checkpointing.params_sha256(params))

  def test_a_source_that_does_not_fit_fails_naming_the_difference(self):
    root = self.create_tempdir().full_path
    data = os.path.join(root, 'data')
    source = testutil.random_workdir(os.path.join(root, 'source'), data)
    common = [
      '-m', 's2s_jax.main', '--config=experiments/default.py:size=tiny', f'--config.data.data_dir={data}',
      '--config.num_train_steps=20', '--config.eval_every_steps=20', '--config.checkpoint_every_steps=20',
    ]  # fmt: skip
    done = testutil.run(*common, '--config.model.hidden_dim=24', f'--workdir={root}/a', f'--init_from={source}')
    self.assertNotEqual(done.returncode, 0)
    self.assertRegex(done.stderr, r'its parameters do not fit this model \(.*\(\d+, \d+\) there, \(\d+, 24\) here')
    done = testutil.run(*common, f'--workdir={root}/b', f'--init_from={source}:999')
    self.assertNotEqual(done.returncode, 0)
    self.assertRegex(done.stderr, r'init.checkpoint=999: --checkpoint=999: step 999 is not kept')
    done = testutil.run(*common, f'--workdir={root}/c', f'--init_from={root}/nothing')
    self.assertNotEqual(done.returncode, 0)
    self.assertRegex(done.stderr, r'init.from_workdir=.*nothing: no config.json there')


if __name__ == '__main__':
  absltest.main()
