"""Speed measurements (CONVENTIONS §7: idle machine, same-invocation comparisons, medians of alternating rounds).

  python scripts/benchmark.py decode --config=experiments/benchmarks/lstm512.py --json=/tmp/decode.json

`decode` times beam search on a randomly initialised model of the config at fixed shapes: every decode runs exactly
--max_len steps (EOS is allowed only at the last one), so per-step costs compare across beam sizes. For each batch
size and beam size it reports sentences/s and ms per decoder step (decode minus encode, over max_len), and at the
largest batch the beam-5 / greedy step-cost ratio and the share of a beam-5 step spent in beam bookkeeping
(log-softmax, top-k, gathers): the same search driven by a step function that returns fixed logits and the
unchanged decoder state.
"""
import functools
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import models
from s2s_jax.data import BOS_ID, EOS_ID, PAD_ID

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file, e.g. experiments/benchmarks/lstm512.py.')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '64'], 'Batch sizes to time.')
_BEAM_SIZES = flags.DEFINE_list('beam_sizes', ['1', '5', '10'], 'Beam sizes to time.')
_SRC_LEN = flags.DEFINE_integer('src_len', None, 'Source length (default: data.max_src_len).')
_MAX_LEN = flags.DEFINE_integer('max_len', None, 'Decoded tokens (default: data.max_tgt_len).')
_VOCAB = flags.DEFINE_integer('vocab_size', None, 'Source and target vocabulary (default: the model config, or '
                              'task_num_symbols + 4 for the generated symbol tasks).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating measurement rounds; medians are reported.')
flags.mark_flags_as_required(['config'])


def _load_average() -> float:
  return os.getloadavg()[0]


def wait_for_idle(threshold: float = 0.5, timeout_s: float = 300.0) -> float:
  """Waits (up to timeout_s) for the 1-minute load average to drop below threshold; returns the last reading."""
  start = time.time()
  while (load := _load_average()) >= threshold and time.time() - start < timeout_s:
    time.sleep(10)
  return load


def _time(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _model_and_params(config, vocab: int, src_len: int):
  config.model.update(src_vocab_size=config.model.src_vocab_size or vocab,
                      tgt_vocab_size=config.model.tgt_vocab_size or vocab,
                      max_src_len=config.model.max_src_len or src_len)
  model = models.Seq2Seq(config_lib.model_config(config))
  ones = jnp.ones((1, src_len), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), ones, ones, ones[:, :2])['params']
  return model, params


def _decode_fns(model, batch_size: int, beam_size: int, max_len: int):
  """Jitted (encode, full decode, bookkeeping-only decode) for one batch and beam size."""
  search = functools.partial(decode.beam_search, batch_size=batch_size, beam_size=beam_size, max_len=max_len,
                             bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, length_alpha=0.6, min_len=max_len - 1)

  def encode(params, batch):
    return model.apply({'params': params}, batch['inputs'], batch['inputs_mask'], method=models.Seq2Seq.encode)

  def full(params, batch):
    memory, state = encode(params, batch)
    memory = decode.expand_to_beams(memory, beam_size)
    step_fn = lambda ids, s: model.apply({'params': params}, ids, s, memory, method=models.Seq2Seq.decode_step)
    return search(step_fn, state)

  def bookkeeping(state, logits_NxV):  # the initial decoder state is an input: no encoder work inside
    return search(lambda ids, s: (logits_NxV, s), state)

  return jax.jit(encode), jax.jit(full), jax.jit(bookkeeping)


def measure_decode(config, batch_sizes, beam_sizes, src_len, max_len, vocab, rounds) -> dict:
  model, params = _model_and_params(config, vocab, src_len)
  rng = np.random.RandomState(0)
  cases, results = [], {}
  for b in batch_sizes:
    batch = {'inputs': rng.randint(4, vocab, (b, src_len)).astype(np.int32),
             'inputs_mask': np.ones((b, src_len), np.int32)}
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
      results[(b, k)]['encode'].append(_time(encode, params, batch))
      results[(b, k)]['decode'].append(_time(full, params, batch))
      results[(b, k)]['bookkeeping'].append(_time(bookkeeping, state, logits))
  rows = []
  for (b, k), t in results.items():
    enc, dec, book = (statistics.median(t[x]) for x in ('encode', 'decode', 'bookkeeping'))
    rows.append({'batch_size': b, 'beam_size': k, 'sentences_per_s': b / dec, 'decode_ms': 1e3 * dec,
                 'encode_ms': 1e3 * enc, 'step_ms': 1e3 * (dec - enc) / max_len,
                 'bookkeeping_step_ms': 1e3 * book / max_len})
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


def main(argv):
  if len(argv) < 2 or argv[1] != 'decode':
    raise app.UsageError('usage: benchmark.py decode --config=FILE --json=OUT [flags]')
  if len(argv) > 2:
    raise app.UsageError(f'Unexpected arguments: {argv[2:]}')
  config = config_lib.to_dict(_CONFIG.value)
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config)
  load = wait_for_idle()
  print(f'1-minute load average before starting: {load:.2f}' + (' (NOT idle: timings unreliable)' if load >= 0.5
                                                                  else ' (idle)'))
  src_len = _SRC_LEN.value or config.data.max_src_len
  max_len = _MAX_LEN.value or config.data.max_tgt_len
  vocab = _VOCAB.value or config.model.tgt_vocab_size or config.data.task_num_symbols + 4
  result = measure_decode(config, [int(x) for x in _BATCH_SIZES.value], [int(x) for x in _BEAM_SIZES.value],
                          src_len, max_len, vocab, _ROUNDS.value)
  result.update(summarize(result), load_average_before=load, device=str(jax.devices()[0]),
                command_line=' '.join(sys.argv))
  print(f'{"batch":>5} {"beam":>4} {"sent/s":>9} {"ms/step":>8} {"bookkeeping ms/step":>20}')
  for r in result['rows']:
    print(f'{r["batch_size"]:>5} {r["beam_size"]:>4} {r["sentences_per_s"]:>9.1f} {r["step_ms"]:>8.2f} '
          f'{r["bookkeeping_step_ms"]:>20.2f}')
  for key in ('beam5_over_greedy_step', 'beam5_bookkeeping_fraction'):
    if key in result:
      print(f'{key} (batch {result["at_batch_size"]}): {result[key]:.3f}')
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
