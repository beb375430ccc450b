"""The data path at scale: preparation, start-up and memory of a training process as the corpus grows.

  python scripts/benchmark_data.py --num_pairs=100000,1000000 [--trees=A,B] [--json=OUT] [--corpus_dir=DIR]

For each N it generates (once, reused from --corpus_dir) a parallel corpus of N pairs: words drawn from a Zipf
distribution over 50,000 word types, 5-40 words per sentence, the target a deterministic rewrite of the source
(`parallel_text`, TSV), plus 2,000 validation and test pairs. Then, per source tree (a checkout; default this
one), it runs the tiny default model on it for 5 steps with word vocabularies of 8,000 in fresh processes:

  cold   a new data_dir and workdir: the dataset is prepared, the vocabularies and ids are built;
  warm   the same data_dir, a new workdir: whatever the tree caches is reused.

and reports, for both, the seconds from process start to the `Training from step` line (CONVENTIONS §2) and the
process's peak RSS (resource.getrusage in the process itself), the cold start's rate (pairs/s up to that line), and
its parts read from its log: the TFDS preparation of the text, the vocabularies and the ids, with the tokenize-once
rate (pairs / (vocabulary + id seconds)). Run it on an idle machine; the trees alternate within each N. Then, on
the largest corpus, the training iterator's delivered batches/s (batch 64, length buckets, --workers grain worker
processes) against the steps/s of the lstm512 train step (scripts/benchmark.py train).
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_NUM_PAIRS = flags.DEFINE_list('num_pairs', ['100000'], 'Corpus sizes (pairs).')
_TREES = flags.DEFINE_list('trees', [], 'Source trees to compare (default: this one).')
_JSON = flags.DEFINE_string('json', None, 'Write the results here as JSON.')
_CORPUS_DIR = flags.DEFINE_string('corpus_dir', None, 'Where generated corpora are kept (default: a temp dir).')
_VOCAB = flags.DEFINE_integer('vocab_size', 8_000, 'Word vocabulary size of the runs.')
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'], 'Pipeline throughput: data.num_workers values to time.')
_PIPELINE_BATCHES = flags.DEFINE_integer('pipeline_batches', 300, 'Pipeline throughput: batches timed per setting.')
_SCRATCH = flags.DEFINE_string(
  'scratch',
  None,
  'Where data_dirs and workdirs go (default: a new temp dir). A data_dir that already holds a committed id cache '
  'is reused: its cold run is skipped (a 10M-pair corpus is prepared once and started warm in later runs).',
)

_TYPES = 50_000
_EVAL = 2_000
# Runs the training process and prints its peak RSS when it exits (absl's app.run ends with sys.exit).
_WRAPPER = (
  'import atexit, resource, runpy, sys\n'
  "atexit.register(lambda: print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
  'file=sys.stderr, flush=True))\n'
  "sys.argv = ['s2s_jax.main'] + sys.argv[1:]\n"
  "runpy.run_module('s2s_jax.main', run_name='__main__')\n"
)


def make_corpus(folder: str, num_pairs: int) -> dict[str, str]:
  """train.tsv (num_pairs), dev.tsv and test.tsv (2,000 each) of Zipf-distributed words, made once."""
  os.makedirs(folder, exist_ok=True)
  paths = {name: os.path.join(folder, f'{name}.tsv') for name in ('train', 'dev', 'test')}
  if all(os.path.exists(p) for p in paths.values()):
    return paths
  rng = np.random.default_rng(num_pairs)
  words = np.array([f'w{i}' for i in range(_TYPES)])
  for name, n in (('train', num_pairs), ('dev', _EVAL), ('test', _EVAL)):
    with open(paths[name] + '.tmp', 'w', encoding='utf-8') as f:
      for start in range(0, n, 10_000):
        count = min(10_000, n - start)
        lengths = rng.integers(5, 41, count)
        ids = np.minimum(rng.zipf(1.2, lengths.sum()), _TYPES) - 1
        for row in np.split(words[ids], np.cumsum(lengths)[:-1]):
          source = ' '.join(row)
          f.write(f'{source}\t{" ".join(row[::-1])}\n')
    os.replace(paths[name] + '.tmp', paths[name])
  return paths


# Times the training iterator of a prepared corpus (warm: ids from the cache) in a fresh process.
_PIPELINE = """
import json, sys, time
from absl import flags
from s2s_jax import config_lib
from s2s_jax.data import batches, pipeline
files, data_dir, vocab, workers, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
flags.FLAGS.mark_as_parsed()  # an entry point without app.run: grain's workers read its absl flags
c = config_lib.base_config().data
c.update(name='parallel_text', files=files, data_dir=data_dir, tokenizer='word', max_vocab_size=vocab, max_src_len=48,
         max_tgt_len=48, num_buckets=0, batch_size=64)
pipeline.resolve_paths(c)
data = pipeline.prepare(c)
it = batches.train_iterator(data, 64, seed=0, num_workers=workers)
for _ in range(5):
  next(it)
start = time.perf_counter()
for _ in range(count):
  next(it)
print('RESULT', json.dumps({'batches_per_s': count / (time.perf_counter() - start)}))
"""


def pipeline_rate(tree: str, paths: dict[str, str], data_dir: str, workers: int) -> float:
  """Training batches per second delivered by the iterator (batch 64, length buckets) with `workers` processes."""
  files = f'train={paths["train"]};validation={paths["dev"]};test={paths["test"]}'
  args = [
    sys.executable,
    '-c',
    _PIPELINE,
    files,
    data_dir,
    str(_VOCAB.value),
    str(workers),
    str(_PIPELINE_BATCHES.value),
  ]
  out = subprocess.run(
    args, cwd=tree, env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True, check=True
  )
  return json.loads(out.stdout.split('RESULT', 1)[1])['batches_per_s']


def train_step_rate(tree: str, scratch: str) -> float:
  """Steps per second of the lstm512 train step (scripts/benchmark.py train, one round of 10 steps)."""
  path = os.path.join(scratch, 'lstm512.json')
  subprocess.run(
    [sys.executable, 'scripts/benchmark.py', 'train', '--config=experiments/benchmarks/lstm512.py', '--rounds=1',
     '--steps=10', f'--json={path}'],
    cwd=tree, env=dict(os.environ, PYTHONPATH=tree), check=True, capture_output=True,
  )  # fmt: skip
  with open(path, encoding='utf-8') as f:
    return json.load(f)['steps_per_s']


def run(tree: str, paths: dict[str, str], data_dir: str, workdir: str) -> dict:
  """One start of the tiny default model on the corpus: seconds to the training line, peak RSS, exit seconds."""
  files = f'train={paths["train"]};validation={paths["dev"]};test={paths["test"]}'
  args = [
    sys.executable,
    '-c',
    _WRAPPER,
    '--config=experiments/default.py:size=tiny',
    f'--workdir={workdir}',
    '--config.data.name=parallel_text',
    f'--config.data.files={files}',
    '--config.data.tokenizer=word',
    f'--config.data.max_vocab_size={_VOCAB.value}',
    '--config.data.max_src_len=48',
    '--config.data.max_tgt_len=48',
    f'--config.data.data_dir={data_dir}',
    '--config.num_train_steps=5',
    '--config.log_every_steps=5',
    '--config.eval_every_steps=5',
    '--config.checkpoint_every_steps=5',
    '--config.eval.num_decode_examples=16',
  ]
  env = dict(os.environ, PYTHONPATH=tree)
  start, marks, tail = time.perf_counter(), {}, []
  with subprocess.Popen(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
    for line in p.stderr:
      tail = (tail + [line])[-20:]
      if 'Training from step' in line:
        marks.setdefault('to_training_s', time.perf_counter() - start)
      if line.startswith('PEAK_RSS_KB'):
        marks['peak_rss_mb'] = int(line.split()[1]) / 1024
      if m := re.search(r'Encoded (\w+): (\d+) pairs in ([\d.]+) s', line):
        marks.setdefault('encode_s', {})[m.group(1)] = float(m.group(3))
      if re.search(r'\] Preparing s2s_', line):
        marks.setdefault('text_start_s', time.perf_counter() - start)
      if m := re.search(r'Built the vocabularies from (\d+) training pairs in ([\d.]+) s', line):
        marks['vocab_s'] = float(m.group(2))
        if 'text_start_s' in marks:  # the TFDS preparation of the text: from its start to the vocabulary's
          marks['text_s'] = time.perf_counter() - start - marks['vocab_s'] - marks['text_start_s']
  if p.returncode:
    raise RuntimeError(f'{tree}: the run failed (exit {p.returncode}):\n' + ''.join(tail))
  marks['exit_s'] = time.perf_counter() - start
  return marks


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  trees = [os.path.abspath(t) for t in _TREES.value] or [_REPO]
  scratch = _SCRATCH.value or tempfile.mkdtemp(prefix='s2s_data_bench_')
  os.makedirs(scratch, exist_ok=True)
  stamp = time.strftime('%Y%m%d-%H%M%S')  # workdirs of this invocation (a reused scratch keeps earlier ones)
  corpus_root = _CORPUS_DIR.value or os.path.join(scratch, 'corpora')
  results = []
  for n in (int(x) for x in _NUM_PAIRS.value):
    start = time.perf_counter()
    paths = make_corpus(os.path.join(corpus_root, f'pairs_{n}'), n)
    print(f'{n} pairs: corpus ready in {time.perf_counter() - start:.0f} s', flush=True)
    for k, tree in enumerate(trees):
      data_dir = os.path.join(scratch, f'data_{n}_{k}')
      prepared = glob.glob(os.path.join(data_dir, 'ids', '*', 'COMMIT'))
      cold = {'to_training_s': float('nan'), 'reused': True} if prepared else None
      cold = cold or run(tree, paths, data_dir, os.path.join(scratch, f'cold_{n}_{k}_{stamp}'))
      warm = run(tree, paths, data_dir, os.path.join(scratch, f'warm_{n}_{k}_{stamp}'))
      encode = cold.get('encode_s', {})
      tokenize_s = cold.get('vocab_s', 0) + sum(encode.values())  # tokenize once: vocabularies + ids
      row = {
        'tree': tree,
        'num_pairs': n,
        'cold': cold,
        'warm': warm,
        'cold_pairs_per_s': n / cold['to_training_s'],
        'tokenize_pairs_per_s': n / max(tokenize_s, 1e-9),
      }
      results.append(row)
      if cold.get('reused'):
        print(
          f'{os.path.basename(tree)} {n:>10,} pairs: prepared earlier (cold run skipped), warm '
          f'{warm["to_training_s"]:.1f} s ({warm.get("peak_rss_mb", 0):.0f} MB)',
          flush=True,
        )
        continue
      print(
        f'{os.path.basename(tree)} {n:>10,} pairs: cold {cold["to_training_s"]:.1f} s ({row["cold_pairs_per_s"]:,.0f} '
        f'pairs/s, {cold.get("peak_rss_mb", 0):.0f} MB), warm {warm["to_training_s"]:.1f} s '
        f'({warm.get("peak_rss_mb", 0):.0f} MB); cold: text (TFDS) {cold.get("text_s", 0):.1f} s, vocabularies '
        f'{cold.get("vocab_s", 0):.1f} s, ids {sum(encode.values()):.1f} s '
        f'({n / max(encode.get("train", 0), 1e-9):,.0f} train pairs/s); tokenize once (vocabularies + ids): '
        f'{row["tokenize_pairs_per_s"]:,.0f} pairs/s',
        flush=True,
      )
  if _WORKERS.value:
    tree, n = trees[-1], int(_NUM_PAIRS.value[-1])
    paths = make_corpus(os.path.join(corpus_root, f'pairs_{n}'), n)
    steps = train_step_rate(tree, scratch)
    pipe = {}
    for workers in (int(w) for w in _WORKERS.value):
      pipe[workers] = pipeline_rate(tree, paths, os.path.join(scratch, f'data_{n}_{len(trees) - 1}'), workers)
      print(
        f'pipeline, {n:,} pairs, {workers} worker(s): {pipe[workers]:.0f} batches/s = {pipe[workers] / steps:.0f}x '
        f'the lstm512 train step ({steps:.2f} steps/s)',
        flush=True,
      )
    results.append({'pipeline_batches_per_s': pipe, 'lstm512_steps_per_s': steps, 'num_pairs': n, 'tree': tree})
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
