"""Speed measurements (CONVENTIONS §7: idle machine, same-invocation comparisons, medians of alternating rounds).

  python scripts/benchmark.py train --config=experiments/benchmarks/lstm512.py [--compare=torch] --json=/tmp/t.json
  python scripts/benchmark.py decode --config=experiments/benchmarks/lstm512.py --json=/tmp/decode.json
  python scripts/benchmark.py scaling --config=experiments/benchmarks/lstm512.py --json=/tmp/scaling.json
  python scripts/benchmark.py epoch --config=experiments/multi30k/bahdanau_bigru.py --trees=../old,. --json=/tmp/e.json

`train` times the real pmapped train step (s2s_jax.steps.train_step with the config's optimizer) on a fixed
synthetic batch of --batch_size x --src_len / --tgt_len random ids after warm-up: `target_tokens_per_s` (median of
--rounds rounds of --steps steps), `steps_per_s`, `compile_s` (AOT lower().compile(), persistent cache off),
`peak_rss_mb`, `flops_per_step` (3 x 2 x the multiply-accumulates of every matmul of the forward pass, counted from
its traced jaxpr; XLA's cost_analysis() beside it as `xla_flops_per_step`, which counts each loop body once, so it
misses most of a recurrent model's matmuls) and `fraction_of_peak_jnp` / `fraction_of_peak_torch`
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

import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # (its library modules, also when loaded by path)
# pylint: disable=g-import-not-at-top,wrong-import-position
import benchmark_epoch
import benchmark_search
import benchmark_train

from s2s_jax import config_lib

# pylint: enable=g-import-not-at-top,wrong-import-position

# What scripts/benchmark_gpu.py (and earlier callers) import from this module.
measure_train = benchmark_train.measure_train
measure_decode = benchmark_search.measure_decode
dot_peak_gflops = _dot_peak_gflops = benchmark_train.dot_peak_gflops
_torch_round = benchmark_train._torch_round  # pylint: disable=protected-access

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


def _epoch_main(config, load: float) -> None:
  trees = [os.path.abspath(t) for t in _TREES.value] or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
  result = benchmark_epoch.measure_epoch(config, _config_args(), trees, _ROUNDS.value)
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
    benchmark_search.summarize(result),
    load_average_before=load,
    device=str(jax.devices()[0]),
    command_line=' '.join(sys.argv),
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
