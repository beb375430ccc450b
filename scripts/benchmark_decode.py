"""Decoding as a user meets it: an exported artifact (s2s_jax.export) against the workdir path, in one invocation.

  python scripts/benchmark_decode.py --workdir=/work/runs/m30k_strong --json=/tmp/decode.json
      [--artifact=ART (default: exported here with the run's settings and --beam=5)] [--num_sentences=200]
      [--batch_sizes=1,8,64] [--rounds=3] [--cold_rounds=2]

Over the first --num_sentences lines of --source_file (default: Multi30k test2016, German, from ../shared/data):
- cold start: `python -m s2s_jax.translate` in a fresh process with the persistent compilation cache off, one input
  line, from process start to its output line (imports, loading, compiling, one decode), --exported=ART against
  --workdir=DIR (beam 5), alternating, --cold_rounds each.
- warm throughput, for each batch size and beam 1 / 5: sentences/s and source tokens/s (EOS excluded) over the
  sentences, and per-sentence latency percentiles (p50 / p90 / p99: a sentence waits for its whole batch, so its
  latency is its batch's decode time, padding and detokenising included). The two paths decode exactly the same
  batches (the sentences in order of length, cut into batch-size chunks) in one process, after one warm-up pass
  each (the compiles); --rounds rounds alternate between them and medians are quoted. `exported / workdir` is the
  ratio of their warm sentences/s at the same batch and beam (the target: at least 0.95). Both paths decode the
  same text: the script checks that their outputs are identical.
Take it on an idle machine (CONVENTIONS §7); the 1-minute load average at the start is recorded.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from s2s_jax import decode
from s2s_jax import export
from s2s_jax import exported
from s2s_jax import inference
from s2s_jax import parallel
from s2s_jax import provenance
from s2s_jax import resources
from s2s_jax.data import raw_files

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run (its best checkpoint).', required=True)
_ARTIFACT = flags.DEFINE_string('artifact', None, 'An artifact of the run (default: exported into --scratch).')
_SCRATCH = flags.DEFINE_string('scratch', None, 'Folder for the artifact and inputs (default: a temp dir).')
_SOURCE = flags.DEFINE_string('source_file', None, 'Input lines (default: Multi30k test2016 German).')
_NUM = flags.DEFINE_integer('num_sentences', 200, 'The first N lines of the source file.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '8', '64'], 'Batch sizes.')
_BEAM = flags.DEFINE_integer('beam', 5, 'The beam of the beam rows (the other rows are greedy, beam 1).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating warm rounds per path and setting.')
_COLD_ROUNDS = flags.DEFINE_integer('cold_rounds', 2, 'Cold starts per path (0: none).')
_JSON = flags.DEFINE_string('json', None, 'Also write the results here.')

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cold_start(args: list[str], line: str) -> float:
  """Seconds from process start to the first output line of `python -m s2s_jax.translate ARGS` fed `line`."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_REPO, os.environ.get('PYTHONPATH')])))
  cmd = [sys.executable, '-m', 's2s_jax.translate', '--compilation_cache_dir=', *args]
  start = time.perf_counter()
  with subprocess.Popen(
    cmd, cwd=_REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  ) as p:
    p.stdin.write(line + '\n')
    p.stdin.close()
    first = p.stdout.readline()
    elapsed = time.perf_counter() - start
    rest, err = p.stdout.read(), p.stderr.read()
  if p.returncode or not first.strip():
    raise RuntimeError(f'{" ".join(cmd)} failed ({p.returncode}): {first}{rest}\n{err[-2000:]}')
  return elapsed


class _Path:
  """One way to decode: `decode(chunk)` -> texts of the best hypothesis of each example in the chunk."""

  def __init__(self, name, fn):
    self.name, self.fn = name, fn


def _workdir_path(run: inference.Run, beam: int, batch_size: int) -> _Path:
  options = decode.options(run.config.decode, run.config.data.max_tgt_len, beam_size=beam, batch_size=batch_size)
  decoder = inference.Decoder(run.model, options, run.tgt_vocab, src_len=run.inputs.max_len, batch_size=batch_size)
  params = parallel.replicate(run.params)
  return _Path('workdir', lambda chunk: [h.texts[0] for h in decoder(params, chunk)])


def _exported_path(artifact: exported.Artifact, beam: int, batch_size: int) -> _Path:
  function = 'greedy' if beam == 1 else 'beam'
  if artifact.hypotheses(function) != beam:
    has = artifact.hypotheses(function)
    raise app.UsageError(f'{artifact.path}: its {function} function has beam {has}, not {beam}; export with --beam.')

  def fn(chunk):  # beam search draws nothing: the sampling keys do not matter
    hyps = artifact.decode(chunk, [0] * len(chunk), function=function, batch_size=batch_size)
    return [h.texts[0] for h in hyps]

  return _Path('exported', fn)


def _pass(path: _Path, chunks: list[list[np.ndarray]]) -> tuple[float, list[float], list[str]]:
  """(seconds, per-sentence latencies, texts) of decoding every chunk once."""
  latencies, texts, start = [], [], time.perf_counter()
  for chunk in chunks:
    t0 = time.perf_counter()
    texts += path.fn(chunk)
    latencies += [time.perf_counter() - t0] * len(chunk)
  return time.perf_counter() - start, latencies, texts


def _percentiles(latencies: list[float]) -> dict[str, float]:
  return {f'p{q}_ms': round(float(np.percentile(latencies, q)) * 1000, 1) for q in (50, 90, 99)}


def warm_rows(run, artifact, examples, tokens, batch_sizes, beams, rounds) -> list[dict]:
  rows = []
  order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
  for beam in beams:
    for batch_size in batch_sizes:
      chunks = [[examples[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
      paths = [_workdir_path(run, beam, batch_size), _exported_path(artifact, beam, batch_size)]
      texts = {p.name: _pass(p, chunks)[2] for p in paths}  # warm-up: compiles
      if texts['workdir'] != texts['exported']:
        raise RuntimeError(f'beam {beam}, batch {batch_size}: the artifact and the workdir decode differently.')
      timed = {p.name: [] for p in paths}
      for r in range(rounds):
        for p in paths if r % 2 == 0 else paths[::-1]:  # alternate which path goes first
          timed[p.name].append(_pass(p, chunks)[:2])
      row = {'beam': beam, 'batch_size': batch_size}
      for name, results in timed.items():
        seconds = statistics.median(s for s, _ in results)
        middle = sorted(results, key=lambda x: x[0])[len(results) // 2]
        row[name] = {
          'seconds': round(seconds, 3),
          'sentences_per_s': round(len(examples) / seconds, 2),
          'src_tokens_per_s': round(tokens / seconds, 1),
          **_percentiles(middle[1]),
        }
      row['exported_over_workdir'] = round(row['exported']['sentences_per_s'] / row['workdir']['sentences_per_s'], 3)
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def _table(result: dict) -> str:
  lines = [
    '| beam | batch | path | sentences/s | source tokens/s | latency p50 / p90 / p99 ms | exported / workdir |',
    '|---|---|---|---|---|---|---|',
  ]
  for row in result['warm']:
    for name in ('workdir', 'exported'):
      r = row[name]
      ratio = f'{row["exported_over_workdir"]:.3f}' if name == 'exported' else ''
      lines.append(
        f'| {row["beam"]} | {row["batch_size"]} | {name} | {r["sentences_per_s"]:.1f} | {r["src_tokens_per_s"]:,.0f} '
        f'| {r["p50_ms"]} / {r["p90_ms"]} / {r["p99_ms"]} | {ratio} |'
      )
  for name, seconds in result['cold_start_s'].items():
    times = ', '.join(f'{s:.1f} s' for s in seconds)
    lines.append(f'\nCold start ({name}, compilation cache off, one line): {times}')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  load = os.getloadavg()[0]
  scratch = os.path.abspath(_SCRATCH.value) if _SCRATCH.value else tempfile.mkdtemp(prefix='s2s_decode_bench_')
  os.makedirs(scratch, exist_ok=True)
  default = os.path.join(raw_files.default_data_root(), 'multi30k', 'task1', 'raw', 'test_2016_flickr.de.gz')
  source = _SOURCE.value or default
  lines = raw_files.read_lines(source)[: _NUM.value]
  workdir = os.path.abspath(_WORKDIR.value)  # the cold starts run in the repository
  run = inference.load(workdir)
  artifact_dir = _ARTIFACT.value and os.path.abspath(_ARTIFACT.value)
  if artifact_dir is None:
    artifact_dir = os.path.join(scratch, f'artifact_{time.strftime("%Y%m%d-%H%M%S")}')
    options = decode.options(run.config.decode, run.config.data.max_tgt_len, beam_size=_BEAM.value)
    t0 = time.perf_counter()
    export.export_run(run, options, artifact_dir, platforms=('cpu',))
    print(f'Exported to {artifact_dir} in {time.perf_counter() - t0:.1f} s', flush=True)
  artifact = exported.Artifact(artifact_dir)
  examples = [run.inputs.encode(line)[0] for line in lines]
  tokens = sum(len(x) - 1 for x in examples)  # EOS excluded
  cold = {'exported': [], 'workdir': []}
  for _ in range(_COLD_ROUNDS.value):
    exported_args = [f'--exported={artifact_dir}', '--exported_function=beam']
    cold['exported'].append(round(_cold_start(exported_args, lines[0]), 2))
    workdir_args = [f'--workdir={workdir}', f'--beam_size={_BEAM.value}']
    cold['workdir'].append(round(_cold_start(workdir_args, lines[0]), 2))
    print('cold start', cold, flush=True)
  batch_sizes = [int(b) for b in _BATCHES.value]
  result = {
    'workdir': workdir,
    'artifact': os.path.abspath(artifact_dir),
    'source_file': source,
    'num_sentences': len(lines),
    'source_tokens': tokens,
    'load_average_1m_at_start': load,
    'commit': provenance.git_sha(),
    'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    'device': str(jax.devices()[0].device_kind),
    'jax': jax.__version__,
    'dot_peak_gflops': resources.dot_peak_gflops(),
    'cold_start_s': cold,
    'warm': warm_rows(run, artifact, examples, tokens, batch_sizes, [1, _BEAM.value], _ROUNDS.value),
  }
  print(_table(result))
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
