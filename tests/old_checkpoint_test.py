"""Checkpoints written before hyperparameters became runtime inputs of the train step (issue 27 item 1) still restore.

tests/testdata/old_layout_workdir/workdir is a finished tiny run written by the code before that change (its
README.txt names the commit and command); expected.json holds what that code printed and wrote for the same commands.
Each test runs today's entry points in subprocesses on a fresh copy of the workdir (a moved workdir: config.json
still names the data folder of the machine that wrote it).

Tolerances: decoded texts, and the scores computed from them, are exact (the decoder and the parameters are
unchanged). Printed beam scores, the test loss and resumed training losses are float32 sums: these subprocesses run
at the tests' XLA optimisation level (S2S_TEST_XLA_FLAGS), the fixture's values were recorded at the default one,
which rounds differently (measured on the old code: scores 4e-6 apart, losses 6e-7 relative); resumed losses of
today's code equal the old code's bit for bit at the default level for steps 41-49 and to 1e-7 at step 50.
"""

import hashlib
import json
import math
import os
import shutil

from absl.testing import absltest
import pytest
import testutil

_FIXTURE = os.path.join(testutil.ROOT, 'tests', 'testdata', 'old_layout_workdir')
_SCORE_ATOL = 2e-5  # printed beam scores (about -16, six decimals)
_LOSS_RTOL = 1e-5  # resumed train/loss; an optimizer state started afresh moves step 42's loss by 2e-3 relative


def _load_expected() -> dict:
  with open(os.path.join(_FIXTURE, 'expected.json'), encoding='utf-8') as f:
    return json.load(f)


@pytest.mark.slow  # five subprocesses of the entry points (translate 3x, evaluate, main), about a minute of CPU
class OldLayoutCheckpointTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.expected = _load_expected()

  def _copy(self) -> tuple[str, str]:
    """A fresh copy of the fixture's workdir and an empty data folder beside it."""
    root = self.create_tempdir().full_path
    workdir = os.path.join(root, 'workdir')
    shutil.copytree(os.path.join(_FIXTURE, 'workdir'), workdir)
    return workdir, os.path.join(root, 'data')

  def _assert_translations(self, got: list[str], want: list[str], what: str) -> None:
    self.assertLen(got, len(want), what)
    for i, (g, w) in enumerate(zip(got, want)):
      g_score, g_text = g.split('\t', 1)
      w_score, w_text = w.split('\t', 1)
      self.assertEqual(g_text, w_text, f'{what}, line {i + 1}')
      if math.isnan(float(w_score)):  # an empty input line
        self.assertTrue(math.isnan(float(g_score)), f'{what}, line {i + 1}: {g_score}')
      else:
        self.assertAlmostEqual(float(g_score), float(w_score), delta=_SCORE_ATOL, msg=f'{what}, line {i + 1}')

  def test_translate_prints_the_old_outputs(self):
    # An untouched copy: translate reads only the workdir (config.json's recorded data folder does not exist here).
    workdir, _ = self._copy()
    for name, case in self.expected['translate'].items():
      with self.subTest(name):
        result = testutil.run(
          '-m', 's2s_jax.translate', f'--workdir={workdir}', f'--input={_FIXTURE}/input.txt', *case['flags']
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self._assert_translations(result.stdout.splitlines(), case['output'], f'translate {" ".join(case["flags"])}')

  def test_evaluate_gives_the_old_scores(self):
    workdir, data_dir = self._copy()
    # config.json names the data folder of the machine that trained the run; evaluate prepares the split there and
    # has no flag for another, so a user who moves a workdir points data.data_dir at a folder of theirs (the dates
    # are generated into it).
    path = os.path.join(workdir, 'config.json')
    with open(path, encoding='utf-8') as f:
      config = json.load(f)
    config['data']['data_dir'] = data_dir
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(config, f, indent=2, sort_keys=True)
    want = dict(self.expected['evaluate_test'])
    result = testutil.run('-m', 's2s_jax.evaluate', f'--workdir={workdir}', *want.pop('flags'))
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(workdir, 'eval_old_check.json'), encoding='utf-8') as f:
      got = json.load(f)
    with open(os.path.join(workdir, 'eval_old_check.hyp.txt'), 'rb') as f:
      self.assertEqual(hashlib.sha256(f.read()).hexdigest(), want.pop('hyp_sha256'), 'the 200 test hypotheses')
    for key in ('loss', 'perplexity'):  # float32 sums of log-probabilities
      self.assertAlmostEqual(got[key], want[key], delta=1e-6 * abs(want[key]), msg=key)
    for key in sorted(set(want) - {'loss', 'perplexity'}):  # from the hypotheses and token counts
      self.assertEqual(got[key], want[key], key)

  def test_main_resumes_with_the_old_optimizer_state(self):
    workdir, data_dir = self._copy()
    want = self.expected['resume']
    # num_train_steps, log_every_steps and data.data_dir may change on resume (config_lib.RESUMABLE): no
    # --allow_config_change.
    result = testutil.run(
      '-m', 's2s_jax.main', f'--workdir={workdir}', *want['flags'], f'--config.data.data_dir={data_dir}'
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    for line in want['log']:
      self.assertIn(line, result.stderr)  # resumed at step 40, not started over
    losses = {}
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
      for record in map(json.loads, f):
        if record['step'] > 40 and 'train/loss' in record:
          losses[str(record['step'])] = record['train/loss']
    self.assertEqual(sorted(losses, key=int), sorted(want['train_loss'], key=int))
    # Step 41's loss checks the restored parameters and data position; steps 42-50 also the restored Adam moments
    # and count (the learning-rate schedule reads the count in the optimizer state).
    for step, loss in want['train_loss'].items():
      self.assertAlmostEqual(losses[step], loss, delta=_LOSS_RTOL * loss, msg=f'train/loss at step {step}')
    self.assertTrue(os.path.isdir(os.path.join(workdir, 'checkpoints', '50')))
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))


if __name__ == '__main__':
  absltest.main()
