"""`benchmark.py decode`: beam search on a randomly initialised model at fixed shapes, and the share of a step spent in
beam bookkeeping (see scripts/benchmark.py's docstring). A library of scripts/benchmark.py (no flags)."""

import functools
import statistics
import time

from absl import logging
import benchmark_train
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import models
from s2s_jax import steps as steps_lib
from s2s_jax.data import BOS_ID
from s2s_jax.data import EOS_ID
from s2s_jax.data import PAD_ID


def _model_and_params(config, vocab: int, src_len: int):
  config.model.update(
    src_vocab_size=config.model.src_vocab_size or vocab,
    tgt_vocab_size=config.model.tgt_vocab_size or vocab,
    max_src_len=config.model.max_src_len or src_len,
  )
  model = models.Seq2Seq(config_lib.model_config(config))
  ones = jnp.ones((1, src_len), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ones, ones, ones[:, :2])['params']
  return model, params


def _decode_fns(model, batch_size: int, beam_size: int, max_len: int):
  """Jitted (encode, full decode, bookkeeping-only decode) for one batch and beam size."""
  options = decode.DecodeOptions(beam_size=beam_size, max_len=max_len, length_alpha=0.6, min_len=max_len - 1)
  search = functools.partial(
    decode.beam_search, options=options, batch_size=batch_size, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID
  )

  def encode(params, batch):
    return model.apply({'params': params}, batch['inputs'], batch['inputs_mask'], method=models.Seq2Seq.encode)

  full = functools.partial(steps_lib.predict_step, model=model, options=options)  # what evaluation and translate run

  def bookkeeping(state, logits_NxV):  # the initial decoder state is an input: no encoder work inside
    return search(lambda ids, s: (logits_NxV, s), state)

  return jax.jit(encode), jax.jit(full), jax.jit(bookkeeping)


def measure_decode(config, batch_sizes, beam_sizes, src_len, max_len, vocab, rounds) -> dict:
  model, params = _model_and_params(config, vocab, src_len)
  rng = np.random.RandomState(0)
  cases, results = [], {}
  for b in batch_sizes:
    batch = {
      'inputs': rng.randint(4, vocab, (b, src_len)).astype(np.int32),
      'inputs_mask': np.ones((b, src_len), np.int32),
    }
    for k in beam_sizes:
      encode, full, bookkeeping = _decode_fns(model, b, k, max_len)
      logits = jnp.asarray(rng.randn(b * k, config.model.tgt_vocab_size).astype(np.float32))
      compile_start = time.perf_counter()
      state = jax.block_until_ready(encode(params, batch)[1])
      for fn, args in ((full, (params, batch)), (bookkeeping, (state, logits))):
        jax.block_until_ready(fn(*args))
      logging.info('batch %d beam %d compiled in %.1f s', b, k, time.perf_counter() - compile_start)
      cases.append((b, k, encode, full, bookkeeping, batch, logits, state))
      results[(b, k)] = {'encode': [], 'decode': [], 'bookkeeping': []}
  for _ in range(rounds):  # alternate every case within each round
    for b, k, encode, full, bookkeeping, batch, logits, state in cases:
      results[(b, k)]['encode'].append(benchmark_train.seconds(encode, params, batch))
      results[(b, k)]['decode'].append(benchmark_train.seconds(full, params, batch))
      results[(b, k)]['bookkeeping'].append(benchmark_train.seconds(bookkeeping, state, logits))
  rows = []
  for (b, k), t in results.items():
    enc, dec, book = (statistics.median(t[x]) for x in ('encode', 'decode', 'bookkeeping'))
    rows.append(
      {
        'batch_size': b,
        'beam_size': k,
        'sentences_per_s': b / dec,
        'decode_ms': 1e3 * dec,
        'encode_ms': 1e3 * enc,
        'step_ms': 1e3 * (dec - enc) / max_len,
        'bookkeeping_step_ms': 1e3 * book / max_len,
      }
    )
  return {'rows': rows, 'src_len': src_len, 'max_len': max_len, 'vocab_size': vocab, 'rounds': rounds}


def summarize(result: dict) -> dict:
  """Beam-5 vs greedy step cost and the bookkeeping share at the largest batch."""
  by = {(r['batch_size'], r['beam_size']): r for r in result['rows']}
  b = max(r['batch_size'] for r in result['rows'])
  out = {}
  if (b, 1) in by and (b, 5) in by:
    out['beam5_over_greedy_step'] = by[(b, 5)]['step_ms'] / by[(b, 1)]['step_ms']
    out['beam5_bookkeeping_fraction'] = by[(b, 5)]['bookkeeping_step_ms'] / by[(b, 5)]['step_ms']
    out['at_batch_size'] = b
  return out
