"""scripts/benchmark_gpu.py: its --smoke run measures every row of the GPU table at tiny sizes on CPU (JAX side
only) or skips it with the reason, through the same functions as the GPU run, so that run cannot fail on a typo;
and a budget that runs out turns the rows left into skipped rows, never into numbers."""

import json
import math
import os
import re
import time

from absl.testing import absltest
import pytest
import testutil

SCRIPT = os.path.join(testutil.ROOT, 'scripts', 'benchmark_gpu.py')
CONFIGS = ('lstm512', 'seq2seq_lstm', 'gru_context', 'bahdanau_bigru', 'strong')
KINDS = ('scan/float32', 'scan/bfloat16', 'cudnn/float32', 'torch/float32', 'decode/float32')
# --smoke's measured rows: each config once, each JAX kind at least once
MEASURED = (
  'lstm512/scan/float32',
  'seq2seq_lstm/decode/float32',
  'gru_context/scan/bfloat16',
  'bahdanau_bigru/decode/float32',
  'strong/scan/bfloat16',
)


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


class BenchmarkGpuTest(absltest.TestCase):
  def _run(self, *args: str):
    out_path = os.path.join(self.create_tempdir().full_path, 'gpu.json')
    start = time.monotonic()
    out = testutil.run(SCRIPT, *args, f'--json={out_path}')
    seconds = time.monotonic() - start
    self.assertEqual(out.returncode, 0, out.stdout[-3000:] + out.stderr[-3000:])
    with open(out_path, encoding='utf-8') as f:
      result = json.load(f)
    keys = [row['key'] for row in result['rows']]
    self.assertCountEqual(keys, [f'{c}/{k}' for c in CONFIGS for k in KINDS])
    for key in keys:  # every row is in the printed table too
      config, kind, dtype = key.split('/')
      self.assertIn(f'| {config} | {kind} | {dtype} |', out.stdout)
    return result, out.stdout, seconds

  @pytest.mark.slow  # subprocesses that compile 3 tiny train steps and 2 beam searches
  def test_smoke_measures_every_jax_row_or_says_why_not(self):
    result, _, _ = self._run('--smoke')
    self.assertEqual(result['platform'], 'cpu')
    for key in ('device_kind', 'jax_version', 'jaxlib_version', 'date', 'commit_date'):
      self.assertTrue(result[key], key)
    if os.path.exists(os.path.join(testutil.ROOT, '.git')):
      self.assertRegex(result['commit'], r'^[0-9a-f]{40}$')
    for row in result['rows']:
      config, kind, dtype = row['key'].split('/')
      if kind == 'cudnn':
        self.assertEqual(row['status'], 'skipped', row)
        self.assertTrue(row['reason'].startswith('no GPU'), row)
        continue
      if kind == 'torch':
        self.assertEqual((row['status'], row['reason']), ('skipped', '--smoke runs the JAX side only'))
        continue
      if row['key'] not in MEASURED:
        self.assertEqual(row['status'], 'skipped', row)
        self.assertTrue(row['reason'].startswith('--smoke measures one scan or decode row per config'), row)
        continue
      self.assertEqual(row['status'], 'ok', row.get('reason'))
      self.assertTrue(_positive(row['wall_s']), row)
      if kind == 'decode':
        self.assertTrue(_positive(row['sentences_per_s']), row)
        self.assertEqual((row['detail']['rows'][0]['beam_size'], row['detail']['max_len']), (5, 6))
      else:
        self.assertTrue(_positive(row['target_tokens_per_s']) and _positive(row['compile_s']), row)
        self.assertEqual(row['detail']['batch_size'] * row['detail']['tgt_len'], 8 * 6)
      if row['peak_bytes_in_use'] is None:  # CPU devices keep no memory statistics: the reason is given instead
        self.assertTrue(row['peak_memory_note'], row)
      else:
        self.assertTrue(_positive(row['peak_bytes_in_use']), row)

  @pytest.mark.slow
  def test_rows_past_the_budget_are_skipped_not_estimated(self):
    result, stdout, seconds = self._run('--smoke', '--max_seconds=4')
    self.assertLess(seconds, 4 + 30)  # the budget counts from the start; printing the table follows it
    for row in result['rows']:
      if row['key'] in MEASURED and row['status'] != 'ok':  # a row done in time may stay
        self.assertEqual(row['status'], 'skipped', row)
        self.assertRegex(row['reason'], r'^(stopped \d+ s into its process|not started): --max_seconds=4 ran out$')
        self.assertNotIn('target_tokens_per_s', row)
    self.assertIn('not started: --max_seconds=4 ran out', stdout)
    self.assertTrue(re.search(r'\| bahdanau_bigru \| decode \| float32 \| - \| - \| - \| - \| - \| skipped', stdout))


if __name__ == '__main__':
  absltest.main()
