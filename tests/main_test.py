"""Tests of the command line: `python -m s2s_jax.main` as a user runs it."""

import json
import os
import subprocess

from absl.testing import absltest
from absl.testing import parameterized
import pytest
import testutil

from s2s_jax import attention
from s2s_jax import rnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FEW_STEPS = [
  '--config.num_train_steps=4',
  '--config.log_every_steps=2',
  '--config.eval_every_steps=4',
  '--config.checkpoint_every_steps=4',
]


def run_main(*flags: str, devices: int = 1, cwd: str = ROOT, **env_extra: str) -> subprocess.CompletedProcess:
  """python -m s2s_jax.main, found through the installed package (no PYTHONPATH: the README's command)."""
  return testutil.run('-m', 's2s_jax.main', *flags, devices=devices, cwd=cwd, repo_on_path=False, **env_extra)


class MainTest(parameterized.TestCase):
  def test_tiny_default_run_writes_only_its_workdir_and_data_dir(self):
    """The README command at size=tiny, started from another directory with its own HOME: it finishes, and nothing
    is written outside --workdir and data.data_dir (no caches in HOME, nothing in the working directory)."""
    home, cwd = self.create_tempdir('home').full_path, self.create_tempdir('cwd').full_path
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    data_dir = self.create_tempdir().full_path
    config = f'--config={ROOT}/experiments/default.py:size=tiny'
    result = run_main(
      config,
      f'--workdir={workdir}',
      f'--config.data.data_dir={data_dir}',
      *_FEW_STEPS,
      cwd=cwd,
      HOME=home,
      PYTHONPATH=ROOT,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
    with open(os.path.join(workdir, 'provenance.json')) as f:
      self.assertIn(config, json.load(f)['command_line'])
    self.assertIn('step 4/4', result.stderr)  # the progress line
    self.assertEqual(os.listdir(cwd), [])
    self.assertEqual([os.path.join(d, f) for d, _, fs in os.walk(home) for f in fs], [])

  @parameterized.named_parameters(
    (
      'bad_value',
      '--config.model.attention=bahdanu',
      "model.attention='bahdanu' is not one of ('none_init', 'none_concat', 'bahdanau', 'luong')",
    ),
    ('unknown_field', '--config.model.hiden_dim=3', "Unknown config field 'model.hiden_dim'"),
    ('bad_combination', '--config.model.input_feeding=true', 'input feeding exists only in the luong flow'),
  )
  def test_bad_flags_fail_before_anything_is_written(self, flag, message):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = run_main('--config=experiments/default.py:size=tiny', f'--workdir={workdir}', flag)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn(message, result.stderr)
    self.assertFalse(os.path.exists(workdir))

  def test_a_steps_flag_on_an_epoch_config_fails_before_anything_is_written(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = run_main(
      '--config=experiments/multi30k/seq2seq_lstm.py', f'--workdir={workdir}', '--config.num_train_steps=5'
    )
    self.assertNotEqual(result.returncode, 0)
    self.assertIn('This config trains by epochs (num_train_epochs=10)', result.stderr)
    self.assertFalse(os.path.exists(workdir))


def _combination_cases():
  cases = []
  for i, (flow, score, feed) in enumerate(attention.VALID_COMBINATIONS):
    cell = rnn.CELLS[i % len(rnn.CELLS)]
    cases.append(
      dict(
        testcase_name=f'{flow}_{score}_feed{int(feed)}_{cell}',
        flags=[
          f'--config.model.attention={flow}',
          f'--config.model.attention_score={score or "additive"}',
          f'--config.model.input_feeding={feed}',
          f'--config.model.context_to_output={flow == "none_concat"}',
          f'--config.model.cell={cell}',
          f'--config.model.bidirectional={i % 2 == 0}',
          f'--config.model.num_layers={1 + i % 2}',
        ],
      )
    )
  return cases


@pytest.mark.slow
class EveryCombinationTest(parameterized.TestCase):
  """Every valid attention combination, and every cell, trains a few steps from the command line."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = os.path.join(absltest.get_default_test_tmpdir(), 'combination_data')

  @parameterized.named_parameters(*_combination_cases())
  def test_trains(self, flags):
    workdir = self.create_tempdir().full_path
    result = run_main(
      '--config=experiments/default.py:size=tiny',
      f'--workdir={workdir}',
      f'--config.data.data_dir={self.data_dir}',
      *_FEW_STEPS,
      *flags,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      records = [json.loads(line) for line in f]
    losses = [r['train/loss'] for r in records if 'train/loss' in r]
    self.assertLen(losses, 2)
    self.assertTrue(all(0 < x < 10 for x in losses), losses)


if __name__ == '__main__':
  absltest.main()
