"""Speed measurements (CONVENTIONS §7: idle machine, same-invocation comparisons, medians of alternating rounds).

  python scripts/benchmark.py train --config=experiments/benchmarks/lstm512.py [--compare=torch] --json=/tmp/t.json
  python scripts/benchmark.py decode --config=experiments/benchmarks/lstm512.py --json=/tmp/decode.json
  python scripts/benchmark.py scaling --config=experiments/benchmarks/lstm512.py --json=/tmp/scaling.json
  python scripts/benchmark.py epoch --config=experiments/multi30k/bahdanau_bigru.py --trees=../old,. --json=/tmp/e.json

`train` times the real pmapped train step (s2s_jax.steps.train_step with the config's optimizer) on a fixed
synthetic batch of --batch_size x --src_len / --tgt_len random ids after warm-up: `target_tokens_per_s` (median of
--rounds rounds of --steps steps), `steps_per_s`, `compile_s` (AOT lower().compile(), persistent cache off),
`peak_rss_mb`, `flops_per_step` (3 x 2 x the multiply-accumulates of every matmul, counted from the shapes;
XLA's cost_analysis() beside it as `xla_flops_per_step`) and `fraction_of_peak_jnp` / `fraction_of_peak_torch`
(achieved FLOP/s over a 2048 x 2048 float32 `jnp.dot` / `torch.mm`, measured after every round of the same
invocation; the median of the rounds' ratios). With
--compare=torch, scripts/torch_reference.py runs the same LSTM architecture in torch.nn.LSTM in subprocesses (1
and 2 threads, OMP_WAIT_POLICY=PASSIVE), alternating with our rounds; `torch_target_tokens_per_s` is the better
thread count's median and `ratio_vs_torch` ours over it.

`scaling` runs `train` once per row, each in a fresh process (its own compile and peak RSS), varying one setting
of the config at a time: --scale_batch_sizes, --scale_lengths (source and target length together) and
--scale_hidden_dims (model.hidden_dim); it prints a Markdown table of target tokens/s, ms per step, compile seconds
and peak RSS per row.

`epoch` runs `python -m s2s_jax.main` for one real epoch of the config's training data in a fresh process and
workdir (data already prepared in data.data_dir), then the evaluation the config runs (validation loss and decoded
scores; no test evaluation), and reads the time of each milestone from its log: start-up, training (compiles
included; `compile_s` is their sum where the version logs them), evaluation, and the evaluation's share of the wall
time at the config's own cadence (eval_every_steps). With --trees=A,B the runs alternate between source trees
(checkouts of two commits), each with the epoch length of its own batching plan.

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
import flax
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import models
from s2s_jax import rnn
from s2s_jax import seq2seq_config
from s2s_jax import steps as steps_lib
from s2s_jax.data import BOS_ID, EOS_ID, PAD_ID

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file, e.g. experiments/benchmarks/lstm512.py.')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['1', '64'], 'Batch sizes to time.')
_BEAM_SIZES = flags.DEFINE_list('beam_sizes', ['1', '5', '10'], 'Beam sizes to time.')
_SRC_LEN = flags.DEFINE_integer('src_len', None, 'Source length (default: data.max_src_len).')
_MAX_LEN = flags.DEFINE_integer('max_len', None, 'Decoded tokens (default: data.max_tgt_len).')
_VOCAB = flags.DEFINE_integer(
  'vocab_size',
  None,
  'Source and target vocabulary (default: the model config, or task_num_symbols + 4 for the generated symbol tasks).',
)
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating measurement rounds; medians are reported.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'train: global batch size (default: data.batch_size).')
_TGT_LEN = flags.DEFINE_integer('tgt_len', None, 'train: target length (default: data.max_tgt_len).')
_STEPS = flags.DEFINE_integer('steps', 20, 'train: timed steps per round.')
_COMPARE = flags.DEFINE_enum('compare', None, ['torch'], 'train: also time the PyTorch reference.')
_NO_WAIT = flags.DEFINE_bool('no_wait', False, 'Do not wait for an idle machine (timings are then labelled).')
_SCALE_BATCH = flags.DEFINE_list('scale_batch_sizes', ['16', '32', '64', '128'], 'scaling: batch sizes.')
_SCALE_LEN = flags.DEFINE_list('scale_lengths', ['15', '30', '60', '120'], 'scaling: source = target lengths.')
_SCALE_HIDDEN = flags.DEFINE_list('scale_hidden_dims', ['256', '512', '1024'], 'scaling: model.hidden_dim values.')
_TREES = flags.DEFINE_list('trees', [], 'epoch: source trees (checkouts) to time, alternated (default: this one).')
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
      results[(b, k)]['encode'].append(_time(encode, params, batch))
      results[(b, k)]['decode'].append(_time(full, params, batch))
      results[(b, k)]['bookkeeping'].append(_time(bookkeeping, state, logits))
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


def matmul_macs(cfg: seq2seq_config.Seq2SeqConfig, batch: int, src_len: int, tgt_len: int) -> int:
  """Multiply-accumulates of the matmuls of one forward pass of a token-input model (embedding lookups excluded):
  encoder and decoder gate matmuls, the bridge, the context's projection (none_concat: once per sentence),
  attention (keys, the query projection and energies of additive / concat scores, scores, context, Luong's
  combination) and the output layer over [state; context; embedding] as the flow has them. FLOPs per train step
  = 3 x 2 x this (forward + backward)."""
  gates = rnn.num_gates(cfg.cell)
  h, e, dirs, layers = cfg.hidden_dim, cfg.embed_dim, cfg.num_directions, cfg.num_layers
  enc_h, att = cfg.encoder_units, cfg.attention_dim or cfg.hidden_dim
  memory = dirs * enc_h
  bs, bt = batch * src_len, batch * tgt_len
  macs, inp = 0, e
  for _ in range(layers):
    macs += dirs * bs * gates * enc_h * (inp + enc_h)
    inp = memory
  if cfg.bridge == 'dense':
    macs += layers * (2 if cfg.cell == 'lstm' else 1) * batch * memory * h
  macs += bt * gates * h * (e + h) + (layers - 1) * bt * gates * h * 2 * h
  if cfg.attention == 'bahdanau':
    macs += bt * gates * h * memory  # the context joins every step's input
  elif cfg.attention == 'luong' and cfg.input_feeding:
    macs += bt * gates * h * h
  elif cfg.attention == 'none_concat':
    macs += batch * memory * gates * h  # projected once per sentence
  out = h + (memory if cfg.attention == 'bahdanau' or cfg.context_to_output else 0) + (e if cfg.embed_to_output else 0)
  if cfg.attention in ('bahdanau', 'luong'):
    score = cfg.attention_score
    if score in ('additive', 'concat'):
      macs += bs * memory * att + bt * h * att + bt * src_len * att * (2 if cfg.coverage else 1)
    elif score == 'location':
      macs += bt * h * cfg.max_src_len
    else:
      macs += bt * src_len * h + (bs * memory * h if score == 'general' or memory != h else 0)
    macs += bt * src_len * memory  # the context
    if cfg.attention == 'luong':
      macs += bt * (memory + h) * h  # h~ = tanh(W_c [c; h])
  if cfg.tie_embeddings:
    return macs + bt * out * e + bt * e * cfg.tgt_vocab_size
  return macs + bt * out * cfg.tgt_vocab_size


def _dot_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  x = jnp.asarray(np.random.RandomState(0).randn(n, n).astype(np.float32))
  dot = jax.jit(jnp.dot)
  jax.block_until_ready(dot(x, x))
  return 2 * n**3 / statistics.median(_time(dot, x, x) for _ in range(repeats)) / 1e9


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
  import subprocess  # pylint: disable=g-import-not-at-top

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
  """The train benchmark (see the module docstring)."""
  import resource  # pylint: disable=g-import-not-at-top
  from s2s_jax import optim  # pylint: disable=g-import-not-at-top
  from s2s_jax import train  # pylint: disable=g-import-not-at-top

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
  device_batch = steps_lib.shard_batch(host_batch)
  state = flax.jax_utils.replicate(state)
  p_step = jax.pmap(train.train_step_fn(config), axis_name='batch', in_axes=(0, 0, None), donate_argnums=(0,))
  hp = optim.hyperparameters(config)
  start = time.perf_counter()
  compiled = p_step.lower(state, device_batch, hp).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get('flops', 0.0)) * jax.local_device_count() if cost else 0.0
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
    peaks.append(_dot_peak_gflops())  # every round: the machine's speed drifts within minutes
    if compare == 'torch':
      torch_rows += [_torch_round(config, batch, src_len, tgt_len, vocab, steps, threads) for threads in (1, 2)]
  step_s = statistics.median(ours)
  flops = 3 * 2 * matmul_macs(cfg, batch, src_len, tgt_len)
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
    'xla_flops_per_step': xla_flops,
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


def _train_main(config, src_len: int, vocab: int, load: float) -> None:
  result = measure_train(
    config,
    _BATCH_SIZE.value or config.data.batch_size,
    src_len,
    _TGT_LEN.value or config.data.max_tgt_len,
    vocab,
    _STEPS.value,
    _ROUNDS.value,
    _COMPARE.value,
  )
  result.update(load_average_before=load, device=str(jax.devices()[0]), command_line=' '.join(sys.argv))
  for key in (
    'target_tokens_per_s',
    'steps_per_s',
    'compile_s',
    'peak_rss_mb',
    'flops_per_step',
    'xla_flops_per_step',
    'fraction_of_peak_jnp',
    'torch_target_tokens_per_s',
    'torch_threads',
    'fraction_of_peak_torch',
    'ratio_vs_torch',
  ):
    if key in result:
      print(f'{key}: {result[key]:.4g}')
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


def scaling_rows(config_args: list[str], base: dict, steps: int, rounds: int) -> list[dict]:
  """One `train` run per setting, each in a fresh process; the varied setting and the run's results per row."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  settings = (
    [('batch_size', int(b)) for b in _SCALE_BATCH.value]
    + [('length', int(n)) for n in _SCALE_LEN.value]
    + [('hidden_dim', int(h)) for h in _SCALE_HIDDEN.value]
  )
  rows = []
  for name, value in settings:
    run = dict(base, **({'src_len': value, 'tgt_len': value} if name == 'length' else {name: value}))
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, 'row.json')
      args = [
        sys.executable,
        os.path.abspath(__file__),
        'train',
        *config_args,
        '--no_wait',
        f'--batch_size={run["batch_size"]}',
        f'--src_len={run["src_len"]}',
        f'--tgt_len={run["tgt_len"]}',
        f'--config.model.hidden_dim={run["hidden_dim"]}',
        f'--steps={steps}',
        f'--rounds={rounds}',
        f'--json={out}',
      ]
      subprocess.run(args, check=True, capture_output=True, text=True, timeout=3600)
      with open(out, encoding='utf-8') as f:
        result = json.load(f)
    rows.append(
      dict(
        varied=name,
        hidden_dim=run['hidden_dim'],
        **{
          k: result[k]
          for k in (
            'batch_size',
            'src_len',
            'tgt_len',
            'target_tokens_per_s',
            'steps_per_s',
            'compile_s',
            'peak_rss_mb',
            'flops_per_step',
            'fraction_of_peak_jnp',
          )
        },
      )
    )
    r = rows[-1]
    print(
      f'| {name} | {r["batch_size"]} | {r["src_len"]} | {r["hidden_dim"]} | {r["target_tokens_per_s"]:,.0f} | '
      f'{1e3 / r["steps_per_s"]:,.0f} | {r["compile_s"]:.1f} | {r["peak_rss_mb"]:,.0f} | '
      f'{r["fraction_of_peak_jnp"]:.2f} |',
      flush=True,
    )
  return rows


def _config_args() -> list[str]:
  """--config=FILE[:args] and its --config.KEY=VALUE overrides as given, for the scaling rows' subprocesses (a row's
  own settings come after them, so they win)."""
  flag = flags.FLAGS['config']
  overrides = config_flags.get_override_values(flag)
  return [f'--config={config_flags.get_config_filename(flag)}'] + [f'--config.{k}={v}' for k, v in overrides.items()]


def _epoch_length(report: dict) -> int:
  """Training batches per epoch from a run's data_report.json (also for the plans of earlier versions)."""
  if 'train_batches_per_epoch' in report:
    return report['train_batches_per_epoch']
  if 'train_buckets' in report:  # an earlier plan: every bucket padded its own last batch
    return sum(-(-b['examples'] // b['batch_size']) for b in report['train_buckets'])
  raise ValueError('epoch needs a bucketed config (data.num_buckets != 1 or data.batch_tokens > 0).')


def _run_main(tree: str, config_args: list[str], overrides: dict, workdir: str) -> dict:
  """One `python -m s2s_jax.main` of the source tree `tree` in a fresh process: seconds from its start to each
  milestone of its log, read as the lines arrive."""
  import re  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top

  args = [
    sys.executable,
    '-m',
    's2s_jax.main',
    f'--workdir={workdir}',
    *config_args,
    *[f'--config.{k}={v}' for k, v in overrides.items()],
  ]
  with open(os.path.join(tree, 's2s_jax', 'config_lib.py'), encoding='utf-8') as f:
    if 'num_train_steps' in overrides and 'num_train_epochs' in f.read():  # trees before it have no such field
      args.append('--config.num_train_epochs=0')
  env = dict(os.environ, PYTHONPATH=tree)
  start = time.perf_counter()
  marks, compile_s, tail = {}, 0.0, []
  with subprocess.Popen(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
    for line in p.stderr:
      now = time.perf_counter() - start
      tail = (tail + [line])[-30:]
      if 'Training from step' in line:
        marks.setdefault('train_start', now)
      elif re.search(r'\] \[\d+\] train/', line):
        marks['train_end'] = now
      elif re.search(r'\] \[\d+\] eval/', line):
        marks['eval_end'] = now
      if m := re.search(r'Compiled the train step .* in ([0-9.]+) s', line):
        compile_s += float(m.group(1))
  if p.returncode:
    raise RuntimeError(f'{" ".join(args)} failed (exit {p.returncode}):\n' + ''.join(tail))
  marks['exit'] = time.perf_counter() - start
  marks['compile_s'] = compile_s if compile_s else None  # versions before lazy compiles do not log them
  return marks


def measure_epoch(config, config_args: list[str], trees: list[str], rounds: int) -> dict:
  """One real epoch of training and the evaluation the config runs after it, per source tree, alternated."""
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top

  quiet = {
    'data.test_splits': '',
    'checkpoint_every_steps': 1,
    'log_every_steps': 1,
    'eval_every_steps': 1,
    'num_train_steps': 1,
    'eval.num_decode_examples': 1,
  }
  lengths, reports = {}, {}
  for tree in trees:  # the epoch length of each tree's own plan, from a one-step run's data_report.json
    workdir = tempfile.mkdtemp(prefix='s2s_epoch_')
    try:
      _run_main(tree, config_args, quiet, workdir)
      with open(os.path.join(workdir, 'data_report.json'), encoding='utf-8') as f:
        reports[tree] = json.load(f)
    finally:
      shutil.rmtree(workdir, ignore_errors=True)
    lengths[tree] = _epoch_length(reports[tree])
  runs = {tree: [] for tree in trees}
  for _ in range(rounds):
    for tree in trees:
      steps = lengths[tree]
      workdir = tempfile.mkdtemp(prefix='s2s_epoch_')
      try:
        overrides = {
          'data.test_splits': '',
          'num_train_steps': steps,
          'log_every_steps': steps,
          'checkpoint_every_steps': steps,
          'eval_every_steps': steps,
        }
        marks = _run_main(tree, config_args, overrides, workdir)
      finally:
        shutil.rmtree(workdir, ignore_errors=True)
      run = {
        'startup_s': marks['train_start'],
        'train_s': marks['train_end'] - marks['train_start'],
        'eval_s': marks['eval_end'] - marks['train_end'],
        'compile_s': marks['compile_s'],
      }
      run['epoch_s'] = run['train_s'] + run['eval_s']
      step_s = (run['train_s'] - (run['compile_s'] or 0.0)) / steps
      run['eval_share_at_config_cadence'] = run['eval_s'] / (run['eval_s'] + step_s * config.eval_every_steps)
      runs[tree].append(run)
      logging.info('%s: %s', tree, run)
  out = {}
  for tree in trees:
    report = reports[tree]
    med = lambda key, r=runs[tree]: statistics.median(x[key] for x in r) if r[0][key] is not None else None
    out[tree] = {
      'steps_per_epoch': lengths[tree],
      'runs': runs[tree],
      'padding_fraction': report['splits']['train']['padding_fraction'],
      'train_batch_shapes': len(report.get('train_buckets', [])),
      **{
        key: med(key)
        for key in ('epoch_s', 'train_s', 'eval_s', 'compile_s', 'startup_s', 'eval_share_at_config_cadence')
      },
    }
  return {
    'trees': out,
    'rounds': rounds,
    'eval_every_steps': config.eval_every_steps,
    'eval_num_decode_examples': config.eval.num_decode_examples,
  }


def _epoch_main(config, load: float) -> None:
  trees = [os.path.abspath(t) for t in _TREES.value] or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
  result = measure_epoch(config, _config_args(), trees, _ROUNDS.value)
  result.update(load_average_before=load, command_line=' '.join(sys.argv))
  print(
    '| tree | batches per epoch | shapes | padding source / target | compile s | train s | eval s | epoch min | '
    'eval share at the config cadence |\n|---|---:|---:|---|---:|---:|---:|---:|---:|'
  )
  for tree, r in result['trees'].items():
    compile_s = f'{r["compile_s"]:.0f}' if r['compile_s'] is not None else 'n/a'
    print(
      f'| {tree} | {r["steps_per_epoch"]} | {r["train_batch_shapes"]} | {r["padding_fraction"]["source"]:.3f} / '
      f'{r["padding_fraction"]["target"]:.3f} | {compile_s} | {r["train_s"]:.0f} | {r["eval_s"]:.0f} | '
      f'{r["epoch_s"] / 60:.1f} | {r["eval_share_at_config_cadence"]:.3f} |'
    )
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


def main(argv):
  if len(argv) < 2 or argv[1] not in ('train', 'decode', 'scaling', 'epoch'):
    raise app.UsageError('usage: benchmark.py train|decode|scaling|epoch --config=FILE --json=OUT [flags]')
  if len(argv) > 2:
    raise app.UsageError(f'Unexpected arguments: {argv[2:]}')
  config = config_lib.to_dict(_CONFIG.value)
  import ml_collections  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(config)
  load = _load_average() if _NO_WAIT.value else wait_for_idle()
  print(
    f'1-minute load average before starting: {load:.2f}'
    + (' (NOT idle: timings unreliable)' if load >= 0.5 else ' (idle)')
  )
  src_len = _SRC_LEN.value or config.data.max_src_len
  vocab = _VOCAB.value or config.model.tgt_vocab_size or config.data.task_num_symbols + 4
  if argv[1] == 'train':
    _train_main(config, src_len, vocab, load)
    return
  if argv[1] == 'epoch':
    _epoch_main(config, load)
    return
  if argv[1] == 'scaling':
    base = {
      'batch_size': _BATCH_SIZE.value or config.data.batch_size,
      'src_len': src_len,
      'tgt_len': _TGT_LEN.value or config.data.max_tgt_len,
      'hidden_dim': config.model.hidden_dim,
    }
    print(
      '| varied | batch | src = tgt length | hidden | target tok/s | ms/step | compile s | peak RSS MB | '
      'fraction of jnp.dot peak |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|'
    )
    rows = scaling_rows(_config_args(), base, _STEPS.value, _ROUNDS.value)
    if _JSON.value:
      with open(_JSON.value, 'w', encoding='utf-8') as f:
        json.dump(
          {
            'rows': rows,
            'base': base,
            'load_average_before': load,
            'device': str(jax.devices()[0]),
            'command_line': ' '.join(sys.argv),
          },
          f,
          indent=2,
        )
    return
  max_len = _MAX_LEN.value or config.data.max_tgt_len
  result = measure_decode(
    config,
    [int(x) for x in _BATCH_SIZES.value],
    [int(x) for x in _BEAM_SIZES.value],
    src_len,
    max_len,
    vocab,
    _ROUNDS.value,
  )
  result.update(
    summarize(result), load_average_before=load, device=str(jax.devices()[0]), command_line=' '.join(sys.argv)
  )
  print(f'{"batch":>5} {"beam":>4} {"sent/s":>9} {"ms/step":>8} {"bookkeeping ms/step":>20}')
  for r in result['rows']:
    print(
      f'{r["batch_size"]:>5} {r["beam_size"]:>4} {r["sentences_per_s"]:>9.1f} {r["step_ms"]:>8.2f} '
      f'{r["bookkeeping_step_ms"]:>20.2f}'
    )
  for key in ('beam5_over_greedy_step', 'beam5_bookkeeping_fraction'):
    if key in result:
      print(f'{key} (batch {result["at_batch_size"]}): {result[key]:.3f}')
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
