"""`benchmark.py train`: the real train step timed on a fixed synthetic batch, its FLOPs (the matmuls of the traced
forward pass), the `jnp.dot` peak and the PyTorch peer (see scripts/benchmark.py's docstring). A library of
scripts/benchmark.py and scripts/benchmark_gpu.py (no flags)."""

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from s2s_jax import config_lib
from s2s_jax import models
from s2s_jax import optim
from s2s_jax import parallel
from s2s_jax import seq2seq_config
from s2s_jax import steps as steps_lib
from s2s_jax import train


def seconds(fn, *args) -> float:
  """Wall seconds of fn(*args), its results ready."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def dot_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of an n x n float32 `jnp.dot` (the median of `repeats`): the peak that fractions of peak divide by."""
  x = jnp.asarray(np.random.RandomState(0).randn(n, n).astype(np.float32))
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(x, x))
  return 2 * n**3 / statistics.median(seconds(dot, x, x) for _ in range(repeats)) / 1e9


def forward_macs(model: models.Seq2Seq, batch: dict) -> int:
  """Multiply-accumulates of the matmuls of the model's forward pass (teacher forcing) on `batch` (matmul_macs:
  counted from the traced computation itself; embedding lookups are gathers, not matmuls). FLOPs per train step =
  3 x 2 x this (forward + backward; CONVENTIONS §7)."""
  args = (batch['inputs'], batch['inputs_mask'], batch['targets'])
  return matmul_macs(lambda p: model.apply(p, *args), jax.eval_shape(model.init, jax.random.PRNGKey(0), *args))


def matmul_macs(fn, *args) -> int:
  """Multiply-accumulates of every matmul (dot_general) of fn(*args) as JAX traces it (nothing runs), nested jaxprs
  included and a scan's body once per step; a while loop with matmuls is refused (a trace does not know its trip
  count). Not XLA's cost analysis: that counts a loop's body once (jax 0.10.2, CPU), and the recurrences are loops,
  so it misses most of a recurrent model's matmuls (`xla_flops_per_step`)."""
  return _jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (lhs_contract, _), (lhs_batch, _) = eqn.params['dimension_numbers']
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      total += math.prod(lhs) * math.prod(rhs) // math.prod([lhs[d] for d in lhs_contract + lhs_batch])
    inner = sum(_jaxpr_macs(sub) for sub in jax.extend.core.jaxprs_in_params(eqn.params))
    if inner and eqn.primitive.name == 'while':
      raise ValueError('matmul_macs: a while loop with matmuls, whose trip count a trace does not know.')
    total += inner * (eqn.params['length'] if eqn.primitive.name == 'scan' else 1)
  return total


def xla_flops(compiled) -> float:
  """FLOPs of one call of a compiled program as XLA's cost analysis counts them (`compiled.cost_analysis()`; for a
  pmapped program, those of one device): elementwise work included, but a loop's body (a scan's) counted once, not
  once per step."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0)) if cost else 0.0


def torch_arch(cfg: seq2seq_config.Seq2SeqConfig) -> str:
  """The scripts/torch_reference.py architecture that mirrors a model config; UsageError when none does."""
  m = cfg
  plain = not (m.pointer_generator or m.coverage or m.tie_embeddings or m.pyramid)
  archs = {
    'luong': m.cell == 'lstm'
    and m.attention == 'luong'
    and m.attention_score == 'general'
    and not m.input_feeding
    and not m.bidirectional
    and m.bridge == 'copy',
    'sutskever': m.cell == 'lstm' and m.attention == 'none_init' and not m.bidirectional and m.bridge == 'copy',
    'cho': m.cell == 'gru'
    and m.attention == 'none_concat'
    and m.context_to_output
    and m.embed_to_output
    and m.num_layers == 1
    and not m.bidirectional
    and m.bridge == 'copy',
    'bahdanau': m.cell == 'gru'
    and m.attention == 'bahdanau'
    and m.attention_score == 'additive'
    and m.embed_to_output
    and m.num_layers == 1
    and m.bidirectional
    and m.bridge == 'dense',
    'input_feeding': m.cell == 'lstm'
    and m.attention == 'luong'
    and m.attention_score == 'general'
    and m.input_feeding
    and m.bidirectional
    and m.bridge == 'dense',
  }
  for arch, match in archs.items():
    if plain and match and m.input_kind == 'tokens':
      return arch
  raise app.UsageError(
    '--compare=torch has PyTorch peers of experiments/benchmarks/lstm512.py and the four '
    'experiments/multi30k/ models (scripts/torch_reference.py); this config is another model.'
  )


def _torch_round(
  config, batch: int, src_len: int, tgt_len: int, vocab: int, steps: int, threads: int, device: str = 'cpu'
) -> dict:
  """One run of scripts/torch_reference.py in a fresh process (on `device`: cpu | cuda); its JSON line."""
  cfg = config_lib.model_config(config)
  script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'torch_reference.py')
  args = [
    sys.executable,
    script,
    f'--arch={torch_arch(cfg)}',
    f'--threads={threads}',
    f'--batch_size={batch}',
    f'--src_len={src_len}',
    f'--tgt_len={tgt_len}',
    f'--vocab_size={vocab}',
    f'--embed_dim={cfg.embed_dim}',
    f'--hidden_dim={cfg.hidden_dim}',
    f'--encoder_hidden_dim={cfg.encoder_units}',
    f'--attention_dim={cfg.attention_dim or cfg.hidden_dim}',
    f'--num_layers={cfg.num_layers}',
    f'--dropout={cfg.dropout_rate}',
    f'--steps={steps}',
    '--repeats=1',
    f'--grad_clip_norm={config.optim.grad_clip_norm}',
    f'--device={device}',
  ]
  out = subprocess.run(
    args, env=dict(os.environ, OMP_WAIT_POLICY='PASSIVE'), capture_output=True, text=True, check=True, timeout=3600
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def measure_train(
  config, batch: int, src_len: int, tgt_len: int, vocab: int, steps: int, rounds: int, compare: str | None
) -> dict:
  """The train benchmark (see scripts/benchmark.py's docstring)."""
  jax.config.update('jax_enable_compilation_cache', False)
  config.model.update(
    src_vocab_size=config.model.src_vocab_size or vocab,
    tgt_vocab_size=config.model.tgt_vocab_size or vocab,
    max_src_len=src_len,
  )
  cfg = config_lib.model_config(config)
  if compare == 'torch':
    torch_arch(cfg)  # fails before anything is timed when no peer mirrors the config
  model = models.Seq2Seq(cfg)
  tx = optim.make_optimizer(config.optim, 10**6)
  state = steps_lib.create_train_state(jax.random.PRNGKey(0), model, tx, src_len, tgt_len)
  rng = np.random.RandomState(0)
  host_batch = {
    'inputs': rng.randint(4, cfg.src_vocab_size, (batch, src_len)).astype(np.int32),
    'inputs_mask': np.ones((batch, src_len), np.int32),
    'targets': rng.randint(4, cfg.tgt_vocab_size, (batch, tgt_len)).astype(np.int32),
  }
  device_batch = parallel.shard_batch(host_batch)
  state = parallel.replicate(state)
  p_step = parallel.data_parallel(train.train_step_fn(config), in_axes=(0, 0, None), donate_argnums=(0,))
  hp = optim.hyperparameters(config)
  start = time.perf_counter()
  compiled = p_step.lower(state, device_batch, hp).compile()
  compile_s = time.perf_counter() - start
  flops = 3 * 2 * forward_macs(model, host_batch)  # (traced, not run)
  for _ in range(3):  # warm-up
    state, _ = compiled(state, device_batch, hp)
  jax.block_until_ready(state)
  ours, peaks, torch_rows = [], [], []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = compiled(state, device_batch, hp)
    jax.block_until_ready(state)
    ours.append((time.perf_counter() - start) / steps)
    peaks.append(dot_peak_gflops())  # every round: the machine's speed drifts within minutes
    if compare == 'torch':
      torch_rows += [_torch_round(config, batch, src_len, tgt_len, vocab, steps, threads) for threads in (1, 2)]
  step_s = statistics.median(ours)
  peak = statistics.median(peaks)
  result = {
    'batch_size': batch,
    'src_len': src_len,
    'tgt_len': tgt_len,
    'vocab_size': vocab,
    'steps': steps,
    'rounds': rounds,
    'step_s_rounds': ours,
    'steps_per_s': 1.0 / step_s,
    'target_tokens_per_s': batch * tgt_len / step_s,
    'compile_s': compile_s,
    'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    'flops_per_step': flops,
    'xla_flops_per_step': xla_flops(compiled) * jax.local_device_count(),
    'jnp_dot_gflops': peak,
    'jnp_dot_gflops_rounds': peaks,
    'fraction_of_peak_jnp': statistics.median(flops / s / (p * 1e9) for s, p in zip(ours, peaks)),
  }
  if torch_rows:
    by_threads = {
      t: statistics.median(r['target_tokens_per_s'] for r in torch_rows if r['threads'] == t) for t in (1, 2)
    }
    best = max(by_threads, key=by_threads.get)
    mm = statistics.median(r['mm_gflops'] for r in torch_rows if r['threads'] == best)  # the thread count used
    result.update(
      torch_rounds=torch_rows,
      torch_threads=best,
      torch_target_tokens_per_s=by_threads[best],
      torch_version=torch_rows[0]['torch_version'],
      torch_mm_gflops=mm,
      fraction_of_peak_torch=flops / step_s / (mm * 1e9),
      ratio_vs_torch=result['target_tokens_per_s'] / by_threads[best],
    )
  return result
