"""scripts/benchmark.py: the FLOP count it reports (scripts/benchmark_train.py), and the train / decode commands at
size=tiny (the numbers themselves are only meaningful on an idle machine; here the tests check what is reported and
how it is derived)."""

import importlib.util
import json
import os
import subprocess

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import testutil

from s2s_jax import models
from s2s_jax import seq2seq_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('benchmark', os.path.join(ROOT, 'scripts', 'benchmark.py'))
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)
benchmark_train = benchmark.benchmark_train


def _run(*args: str) -> subprocess.CompletedProcess:
  return testutil.run(os.path.join(ROOT, 'scripts', 'benchmark.py'), *args)


def _macs(cfg: seq2seq_config.Seq2SeqConfig, b: int, s: int, t: int) -> int:
  """benchmark_train.forward_macs of the model on a batch of b sentences of s source and t target ids."""
  batch = {'inputs': np.ones((b, s), np.int32), 'inputs_mask': np.ones((b, s), np.int32)}
  return benchmark_train.forward_macs(models.Seq2Seq(cfg), dict(batch, targets=np.ones((b, t), np.int32)))


class MatmulMacsTest(absltest.TestCase):
  def test_lstm_luong_general_by_hand(self):
    cfg = seq2seq_config.Seq2SeqConfig(
      src_vocab_size=64,
      tgt_vocab_size=64,
      cell='lstm',
      num_layers=2,
      attention='luong',
      attention_score='general',
      embed_dim=16,
      hidden_dim=32,
    )
    b, s, t = 16, 12, 10
    encoder = b * s * 4 * 32 * (16 + 32) + b * s * 4 * 32 * (32 + 32)
    decoder = b * t * 4 * 32 * (16 + 32) + b * t * 4 * 32 * (32 + 32)
    attention = b * s * 32 * 32 + 2 * b * t * s * 32 + b * t * 64 * 32
    vocab = b * t * 32 * 64
    self.assertEqual(_macs(cfg, b, s, t), encoder + decoder + attention + vocab)

  def test_bidirectional_gru_bahdanau_by_hand(self):
    cfg = seq2seq_config.Seq2SeqConfig(
      src_vocab_size=50,
      tgt_vocab_size=40,
      cell='gru',
      num_layers=1,
      bidirectional=True,
      encoder_hidden_dim=8,
      bridge='dense',
      attention='bahdanau',
      attention_score='additive',
      embed_dim=4,
      hidden_dim=12,
    )
    b, s, t = 2, 5, 3
    encoder = 2 * b * s * 3 * 8 * (4 + 8)
    bridge = b * 16 * 12
    decoder = b * t * 3 * 12 * (4 + 16 + 12)
    attention = b * s * 16 * 12 + b * t * 12 * 12 + b * t * s * 12 + b * t * s * 16  # keys, query, energy, context
    vocab = b * t * (12 + 16) * 40
    self.assertEqual(_macs(cfg, b, s, t), encoder + bridge + decoder + attention + vocab)

  def test_gru_context_by_hand(self):
    cfg = seq2seq_config.Seq2SeqConfig(
      src_vocab_size=50,
      tgt_vocab_size=40,
      cell='gru',
      num_layers=1,
      bridge='copy',
      attention='none_concat',
      context_to_output=True,
      embed_to_output=True,
      embed_dim=4,
      hidden_dim=12,
    )
    b, s, t = 2, 5, 3
    encoder = b * s * 3 * 12 * (4 + 12)
    decoder = b * t * 3 * 12 * (4 + 12) + b * 12 * 3 * 12  # the context is projected once per sentence
    vocab = b * t * (12 + 12 + 4) * 40
    self.assertEqual(_macs(cfg, b, s, t), encoder + decoder + vocab)

  def test_a_scan_counts_its_body_once_per_step_where_xla_counts_it_once(self):
    w, x = jnp.ones((16, 16)), jnp.ones((4, 16))

    def recurrence(x):
      return jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, length=10)[0]

    self.assertEqual(benchmark_train.matmul_macs(recurrence, x), 10 * 4 * 16 * 16)
    # XLA's cost analysis (xla_flops_per_step) sees the loop body once: why flops_per_step does not come from it.
    xla = benchmark_train.xla_flops(jax.jit(recurrence).lower(x).compile())
    self.assertLess(xla, 2 * 2 * 4 * 16 * 16)
    self.assertGreaterEqual(xla, 2 * 4 * 16 * 16)

  def test_a_while_loop_with_matmuls_is_refused(self):
    w = jnp.ones((8, 8))

    def loop(x):
      return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] @ w), (0, x))[1]

    with self.assertRaisesRegex(ValueError, 'a while loop with matmuls, whose trip count a trace does not know'):
      benchmark_train.matmul_macs(loop, jnp.ones((2, 8)))


class CommandTest(absltest.TestCase):
  @pytest.mark.slow  # a subprocess that compiles and times the lstm512 model
  def test_train_reports_every_field(self):
    out_path = os.path.join(self.create_tempdir().full_path, 'train.json')
    args = [
      'train',
      '--config=experiments/benchmarks/lstm512.py:size=tiny',
      '--no_wait',
      '--steps=2',
      '--rounds=1',
      f'--json={out_path}',
    ]
    if importlib.util.find_spec('torch') is not None:
      args.append('--compare=torch')
    out = _run(*args)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertIn('1-minute load average before starting', out.stdout)
    with open(out_path) as f:
      result = json.load(f)
    for key in (
      'target_tokens_per_s',
      'steps_per_s',
      'compile_s',
      'peak_rss_mb',
      'flops_per_step',
      'xla_flops_per_step',
      'fraction_of_peak_jnp',
      'jnp_dot_gflops',
    ):
      self.assertGreater(result[key], 0.0, key)
    self.assertAlmostEqual(
      result['target_tokens_per_s'],
      result['steps_per_s'] * result['batch_size'] * result['tgt_len'],
      delta=1e-9 * result['target_tokens_per_s'],
    )
    if '--compare=torch' in args:
      self.assertAlmostEqual(
        result['ratio_vs_torch'], result['target_tokens_per_s'] / result['torch_target_tokens_per_s'], places=6
      )
      self.assertEqual({r['threads'] for r in result['torch_rounds']}, {1, 2})

  @pytest.mark.slow
  def test_scaling_runs_one_train_row_per_setting(self):
    out_path = os.path.join(self.create_tempdir().full_path, 'scaling.json')
    out = _run(
      'scaling',
      '--config=experiments/benchmarks/lstm512.py:size=tiny',
      '--config.model.embed_dim=8',
      '--no_wait',
      '--steps=1',
      '--rounds=1',
      '--scale_batch_sizes=4',
      '--scale_lengths=6,9',
      '--scale_hidden_dims=24',
      f'--json={out_path}',
    )
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(out_path) as f:
      rows = json.load(f)['rows']
    self.assertEqual(
      [(r['varied'], r['batch_size'], r['src_len'], r['tgt_len'], r['hidden_dim']) for r in rows],
      [
        ('batch_size', 4, 12, 12, 32),
        ('length', 16, 6, 6, 32),
        ('length', 16, 9, 9, 32),
        ('hidden_dim', 16, 12, 12, 24),
      ],
    )
    for r in rows:
      self.assertGreater(r['target_tokens_per_s'], 0.0)
      self.assertGreater(r['compile_s'], 0.0)
    self.assertEqual(out.stdout.count('\n| '), 1 + 4)  # the Markdown header and one row each
    # The --config.* override reached the rows' processes: their FLOP count is that of embeddings of 8 (tiny: 16).
    cfg = seq2seq_config.Seq2SeqConfig(
      src_vocab_size=64,
      tgt_vocab_size=64,
      cell='lstm',
      num_layers=2,
      attention='luong',
      attention_score='general',
      embed_dim=8,
      hidden_dim=32,
    )
    self.assertEqual(rows[0]['flops_per_step'], 3 * 2 * _macs(cfg, 4, 12, 12))

  def test_torch_comparison_refuses_other_architectures(self):
    out = _run(
      'train', '--config=experiments/default.py:size=tiny', '--no_wait', '--steps=1', '--rounds=1', '--compare=torch'
    )
    self.assertNotEqual(out.returncode, 0)
    self.assertIn('--compare=torch has PyTorch peers of', out.stderr)


if __name__ == '__main__':
  absltest.main()
