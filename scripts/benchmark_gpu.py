"""The speed table a GPU user needs, in one command and a fixed time (compiles included).

  python scripts/benchmark_gpu.py [--max_seconds=480] [--json=OUT]
  python scripts/benchmark_gpu.py --smoke --json=OUT     # tiny sizes on any backend: the slow tier's check

--smoke goes through the same functions at size=tiny (batch 8, 6 + 6 tokens, 2 steps, 1 round, JAX side only, all
its rows in one process) and measures SMOKE_ROWS: each config once, each of scan float32, scan bfloat16 and decode
at least once (the other scan and decode rows are skipped with that reason, to fit the slow tier).

Rows, in the order they are run (so the budget cuts the least needed ones): for lstm512
(experiments/benchmarks/lstm512.py) and the four published Multi30k configs (seq2seq_lstm, gru_context,
bahdanau_bigru: the three tutorial configs; strong), the train step with the scanned recurrence in float32
(`model.rnn_impl=scan` where the field exists: its default `auto` would pick cuDNN on a CUDA GPU), the
encoder's LSTM layers on cuDNN (`model.rnn_impl=cudnn`, float32; LSTM configs on a GPU backend only), the PyTorch
peer (scripts/torch_reference.py --device=cuda: nn.LSTM / nn.GRU on cuDNN; GPU and torch only), the scan in
bfloat16 (`model.dtype`) and beam-5 decoding (float32 scan). Train rows are `scripts/benchmark.py`'s
measure_train on a fixed synthetic batch (lstm512: 64 x 30 + 30 tokens, vocabularies of 8,000; Multi30k: 128 x 28
+ 28 tokens, vocabularies of 6,000, as the README's CPU table): target tokens/s (median of 3 rounds of 20 steps),
AOT compile seconds with the persistent cache off (CONVENTIONS §7); decode rows are its measure_decode (sentences/s
of beam 5 at the same batch, exactly tgt_len steps per sentence, median of 3 rounds).

Every row runs in a fresh process, so its peak device memory is its own: `peak_bytes_in_use` of
`jax.local_devices()[0].memory_stats()` (null with the reason where the backend has none, e.g. CPU; for torch,
torch.cuda.max_memory_allocated()). A row starts only while the --max_seconds budget (from this process's start)
lasts, and is stopped at its end; rows that did not finish are printed as skipped with the reason: no number is
ever estimated. The JSON also records the device kind, jax and jaxlib versions, the CUDA runtime, cuDNN and driver
versions where available, the commit and the date. Exit status 1 when a row failed (the table is still written).
"""

import time

_START = time.monotonic()  # the budget counts from here: imports and device start-up included

import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import traceback

from absl import app
from absl import flags

# scripts/benchmark.py's measurements, from its flag-free library modules beside this file.
from benchmark_search import measure_decode
from benchmark_train import _torch_round
from benchmark_train import measure_train
import jax

from s2s_jax import config_lib

_MAX_SECONDS = flags.DEFINE_float('max_seconds', 480.0, 'Wall-time budget of the whole run, compiles included.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here as JSON.')
_SMOKE = flags.DEFINE_bool('smoke', False, 'Tiny sizes, 2 steps, 1 round, JAX only, SMOKE_ROWS in one process.')
_ROWS = flags.DEFINE_list('rows', None, 'Internal: measure these rows in this process, one JSON line each.')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name: (experiment file, batch, source length, target length, vocabulary) of the full run
CONFIGS = {
  'lstm512': ('benchmarks/lstm512.py', 64, 30, 30, 8_000),
  'seq2seq_lstm': ('multi30k/seq2seq_lstm.py', 128, 28, 28, 6_000),
  'gru_context': ('multi30k/gru_context.py', 128, 28, 28, 6_000),
  'bahdanau_bigru': ('multi30k/bahdanau_bigru.py', 128, 28, 28, 6_000),
  'strong': ('multi30k/strong.py', 128, 28, 28, 6_000),
}
SMOKE_SHAPES = (8, 6, 6, 64)  # batch, source length, target length, vocabulary of --smoke (configs at size=tiny)
# The scan and decode rows --smoke measures: each config and each of these kinds once, within the slow tier's time
SMOKE_ROWS = (
  'lstm512/scan/float32',
  'seq2seq_lstm/decode/float32',
  'gru_context/scan/bfloat16',
  'bahdanau_bigru/decode/float32',
  'strong/scan/bfloat16',
)
# (kind, dtype) of each row, in the order they run
KINDS = (('scan', 'float32'), ('cudnn', 'float32'), ('torch', 'float32'), ('scan', 'bfloat16'), ('decode', 'float32'))
_ROW_PREFIX = 'BENCHMARK_GPU_ROW '


def load_config(name: str, smoke: bool):
  path = os.path.join(ROOT, 'experiments', CONFIGS[name][0])
  spec = importlib.util.spec_from_file_location(f'benchmark_gpu_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('size=tiny' if smoke else None)


def _shapes(name: str, smoke: bool) -> dict:
  batch, src_len, tgt_len, vocab = SMOKE_SHAPES if smoke else CONFIGS[name][1:]
  return {'batch_size': batch, 'src_len': src_len, 'tgt_len': tgt_len, 'vocab_size': vocab}


def skip_reason(name: str, kind: str, dtype: str, smoke: bool, platform: str, platform_version: str = '') -> str | None:
  """Why a row cannot run here (None: it can)."""
  if kind == 'cudnn':
    if platform != 'gpu':
      return f'no GPU (backend {platform}): rnn_impl=cudnn runs on GPUs only'
    if 'rocm' in platform_version.lower():
      return 'a ROCm GPU: rnn_impl=cudnn runs on CUDA GPUs only'
    if 'rnn_impl' not in config_lib.base_config().model:
      return 'this tree has no model.rnn_impl (issue 27 item 4)'
    if (cell := load_config(name, smoke).model.cell) != 'lstm':
      return f'cuDNN recurrence is LSTM only (model.cell={cell})'
  if kind in ('scan', 'decode') and smoke and f'{name}/{kind}/{dtype}' not in SMOKE_ROWS:
    return '--smoke measures one scan or decode row per config (the others run the same functions)'
  if kind == 'torch':
    if smoke:
      return '--smoke runs the JAX side only'
    if platform != 'gpu':
      return f'no GPU (backend {platform}); the CPU peers are `scripts/benchmark.py train --compare=torch`'
    if importlib.util.find_spec('torch') is None:
      return 'torch is not installed (pip install -e ".[torch]")'
  return None


def _peak_memory() -> tuple[int | None, str | None]:
  """This process's peak device memory on its first local device, or None and why."""
  device = jax.local_devices()[0]
  stats = device.memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return None, f'{device.platform} devices report no peak_bytes_in_use in memory_stats()'
  return int(stats['peak_bytes_in_use']), None


def measure_row(key: str, smoke: bool, first_in_process: bool) -> dict:
  """One row, measured in this process: the numbers of the table and the benchmark's whole result."""
  name, kind, dtype = key.split('/')
  config = load_config(name, smoke)
  b, src_len, tgt_len, vocab = _shapes(name, smoke).values()
  steps, rounds = (2, 1) if smoke else (20, 3)
  config.model.update(dtype=dtype, src_vocab_size=vocab, tgt_vocab_size=vocab)
  if 'rnn_impl' in config.model:  # explicit: on a CUDA GPU the default `auto` would run cuDNN in the scan rows
    config.model.rnn_impl = 'cudnn' if kind == 'cudnn' else 'scan'
  row = {'target_tokens_per_s': None, 'sentences_per_s': None, 'compile_s': None}
  if kind == 'torch':
    detail = _torch_round(config, b, src_len, tgt_len, vocab, steps, os.cpu_count() or 1, device='cuda')
    note = 'torch.cuda.max_memory_allocated() of the peer process'
    return dict(
      row,
      target_tokens_per_s=detail['target_tokens_per_s'],
      peak_bytes_in_use=detail.get('peak_bytes'),
      peak_memory_note=note,
      detail=detail,
    )
  if kind == 'decode':
    detail = measure_decode(config, [b], [5], src_len, tgt_len, vocab, rounds)
    row.update(sentences_per_s=detail['rows'][0]['sentences_per_s'])
  else:
    detail = measure_train(config, b, src_len, tgt_len, vocab, steps, rounds, None)
    row.update(target_tokens_per_s=detail['target_tokens_per_s'], compile_s=detail['compile_s'])
  peak, note = _peak_memory()
  if not first_in_process and peak is not None:  # the counter never goes down: an earlier row's peak would show
    peak, note = None, 'shared its process with an earlier row (--smoke)'
  return dict(row, peak_bytes_in_use=peak, peak_memory_note=note, detail=detail)


def _child_main(keys: list[str], smoke: bool) -> None:
  """Measures `keys` in order, printing one prefixed JSON line per row as it finishes."""
  jax.config.update('jax_enable_compilation_cache', False)  # compile seconds from scratch (CONVENTIONS §7)
  for i, key in enumerate(keys):
    start = time.monotonic()
    try:
      row = dict(measure_row(key, smoke, i == 0), status='ok')
    except subprocess.CalledProcessError as e:  # the torch peer: its last line of stderr says why
      last = (e.stderr or '').strip().splitlines()[-1:] or ['no stderr']
      row = {
        'status': 'error',
        'reason': f'the peer exited with {e.returncode}: {last[0]}',
        'log': (e.stderr or '')[-3000:],
      }
    except Exception as e:  # pylint: disable=broad-except  (reported in the row; the next row still runs)
      row = {'status': 'error', 'reason': f'{type(e).__name__}: {e}', 'log': traceback.format_exc()[-3000:]}
    row.update(key=key, wall_s=time.monotonic() - start)
    print(_ROW_PREFIX + json.dumps(row), flush=True)


def _run_rows(keys: list[str], smoke: bool, timeout_s: float, env: dict) -> tuple[dict, str | None, str]:
  """Runs `keys` in a fresh process (its own session, so a stop reaches the torch peer too) for at most timeout_s:
  the rows it finished, why it stopped early (None: it did not) and its stderr's tail."""
  args = [sys.executable, os.path.abspath(__file__), f'--rows={",".join(keys)}'] + (['--smoke'] if smoke else [])
  proc = subprocess.Popen(
    args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
  )
  stopped = None
  try:
    out, err = proc.communicate(timeout=timeout_s)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    stopped = 'timeout'
  if stopped is None and proc.returncode:
    stopped = f'exit status {proc.returncode}'
  rows = {}
  for line in out.splitlines():
    if line.startswith(_ROW_PREFIX):
      row = json.loads(line[len(_ROW_PREFIX) :])
      rows[row['key']] = row
  return rows, stopped, err[-3000:]


def environment() -> dict:
  """The device, software versions, commit and date of this run."""
  devices = jax.devices()
  env = {
    'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'platform': devices[0].platform,
    'device_kind': devices[0].device_kind,
    'device_count': len(devices),
    'jax_version': jax.__version__,
    'jaxlib_version': importlib.metadata.version('jaxlib'),
    'platform_version': getattr(getattr(devices[0], 'client', None), 'platform_version', None),
    'load_average_1min_before': os.getloadavg()[0],
  }
  try:  # a private module of jax (None without the CUDA plugin): versions where it has them
    from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top
  except ImportError:
    cuda_versions = None

  for key, fn in (('cuda_runtime_version', 'cuda_runtime_get_version'), ('cudnn_version', 'cudnn_get_version')):
    env[key] = getattr(cuda_versions, fn)() if cuda_versions is not None and hasattr(cuda_versions, fn) else None
  for key, cmd in (
    ('driver_version', ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader']),
    ('commit', ['git', '-C', ROOT, 'rev-parse', 'HEAD']),
    ('commit_date', ['git', '-C', ROOT, 'log', '-1', '--format=%cI']),
    ('uncommitted_changes', ['git', '-C', ROOT, 'status', '--porcelain', '--untracked-files=no']),
  ):
    try:
      env[key] = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      env[key] = None
  if env['uncommitted_changes'] is not None:
    env['uncommitted_changes'] = bool(env['uncommitted_changes'])
  return env


def _fmt(value, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def table_line(row: dict) -> str:
  name, kind, dtype = row['key'].split('/')
  peak = row.get('peak_bytes_in_use')
  note = row.get('reason', '').strip().splitlines()[:1] if row['status'] != 'ok' else []
  return (
    f'| {name} | {kind} | {dtype} | {_fmt(row.get("target_tokens_per_s"), ",.0f")} | '
    f'{_fmt(row.get("sentences_per_s"), ",.1f")} | {_fmt(row.get("compile_s"), ".1f")} | '
    f'{_fmt(peak / 2**20 if peak is not None else None, ",.0f")} | {_fmt(row.get("wall_s"), ".0f")} | '
    f'{row["status"]}{": " + note[0] if note else ""} |'
  )


TABLE_HEADER = (
  '| config | kind | dtype | train target tok/s | beam-5 sent/s | compile s | peak device MiB | wall s | status |\n'
  '|---|---|---|---:|---:|---:|---:|---:|---|'
)


def _unfinished(key: str, stopped: str, first: bool, seconds: float, max_seconds: float, err: str) -> dict:
  """The row of a key its process did not report: skipped for the budget, or an error when the process died."""
  if stopped == 'timeout' and first:
    reason = f'stopped {seconds:.0f} s into its process: --max_seconds={max_seconds:g} ran out'
  elif stopped in ('timeout', 'budget'):
    reason = f'not started: --max_seconds={max_seconds:g} ran out'
  else:
    return {'key': key, 'status': 'error', 'reason': f'its process ended ({stopped}) before this row', 'log': err}
  return {'key': key, 'status': 'skipped', 'reason': reason}


def run_all(max_seconds: float, smoke: bool, child_env: dict) -> dict:
  """Every row (measured, or skipped with the reason) within max_seconds from _START, and the environment."""
  env = environment()
  order = [f'{name}/{kind}/{dtype}' for kind, dtype in KINDS for name in CONFIGS]
  rows, todo = {}, []
  for key in order:
    if reason := skip_reason(*key.split('/'), smoke, env['platform'], str(env['platform_version'])):
      rows[key] = {'key': key, 'status': 'skipped', 'reason': reason}
    else:
      todo.append(key)
  versions = ('jax_version', 'jaxlib_version', 'cuda_runtime_version', 'cudnn_version', 'driver_version', 'commit')
  print(
    f'{env["device_kind"]} x{env["device_count"]} ({env["platform"]}), '
    + ', '.join(f'{key.removesuffix("_version")} {env[key]}' for key in versions if env[key] is not None),
    flush=True,
  )
  print(TABLE_HEADER, flush=True)
  for row in rows.values():
    print(table_line(row), flush=True)
  groups = [todo] if smoke else [[key] for key in todo]  # --smoke: one process (2 cores); else one per row
  for group in groups:
    started = time.monotonic()
    left = max_seconds - (started - _START)
    done, stopped, err = _run_rows(group, smoke, left, child_env) if left > 0 else ({}, 'budget', '')
    missing = [key for key in group if key not in done]
    for key in group:
      if key not in done:
        first = key == missing[0]
        done[key] = _unfinished(key, stopped, first, time.monotonic() - started, max_seconds, err)
      rows[key] = done[key]
      print(table_line(rows[key]), flush=True)
      if rows[key]['status'] == 'error':
        print(f'{key}:\n{rows[key]["log"]}', file=sys.stderr, flush=True)
  result = dict(env, smoke=smoke, max_seconds=max_seconds, wall_s=time.monotonic() - _START)
  result.update(shapes={name: _shapes(name, smoke) for name in CONFIGS}, rows=[rows[key] for key in order])
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _ROWS.value:
    _child_main(_ROWS.value, _SMOKE.value)
    return
  if not math.isfinite(_MAX_SECONDS.value) or _MAX_SECONDS.value <= 0:
    raise app.UsageError(f'--max_seconds must be a positive number of seconds, not {_MAX_SECONDS.value}.')
  if _JSON.value and not os.path.isdir(os.path.dirname(os.path.abspath(_JSON.value))):  # before the run, not after
    raise app.UsageError(f'--json={_JSON.value}: its folder does not exist; create it or give another path.')
  # This process only asks what the device is; each row's process measures. Without this, XLA would reserve 75% of
  # the GPU's memory here for the whole run, and the rows' processes could not have it.
  child_env = dict(os.environ)  # the rows' processes allocate as XLA does by default (or as the user set)
  os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  result = run_all(_MAX_SECONDS.value, _SMOKE.value, child_env)
  result['command_line'] = ' '.join(sys.argv)
  print(f'\nAll rows, by config ({result["wall_s"]:.0f} s of --max_seconds={result["max_seconds"]:g}):')
  print(TABLE_HEADER)
  for row in sorted(result['rows'], key=lambda r: list(CONFIGS).index(r['key'].split('/')[0])):
    print(table_line(row))
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)
  if any(row['status'] == 'error' for row in result['rows']):
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
