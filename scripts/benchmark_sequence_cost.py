"""The cost of the sequence-level loss' costs (s2s_jax/sequence_loss.py) for one train step's candidates.

  python scripts/benchmark_sequence_cost.py --workdir=/work/runs/m30k_strong \
      --references=$S2S_DATA_DIR/multi30k/task1/raw/val.en.gz [--pairs=650] [--json=OUT]

Scores `--pairs` (hypothesis, reference) rows of token ids, as a step of `strong_risk` scores about 130 sources x 5
candidates: the hypotheses are the reference rows shifted by one sentence (so costs are neither 0 nor 1) of
--references (the run's validation references), encoded with its target vocabulary. Times the jitted `bleu_cost`
(JAX, on the ids) and the jitted `chrf_cost` (sacreBLEU on the host through jax.pure_callback), medians of --rounds
calls after one warm-up call each, interleaved. Compare with the step's own time (train/steps_per_s in metrics.jsonl).
"""

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import data as data_lib
from s2s_jax import resources
from s2s_jax import sequence_loss
from s2s_jax.data import raw_files
from s2s_jax.data import vocab as vocab_lib

# pylint: enable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained text run (its config and target vocabulary).')
_REFERENCES = flags.DEFINE_string('references', None, 'Reference sentences, one per line (.gz accepted).')
_PAIRS = flags.DEFINE_integer('pairs', 650, 'Rows scored per call.')
_ROUNDS = flags.DEFINE_integer('rounds', 7, 'Timed calls of each cost.')
_JSON = flags.DEFINE_string('json', None, 'Write the results here too.')
flags.mark_flags_as_required(['workdir', 'references'])


def _rows(workdir: str, references: str, n: int) -> tuple[np.ndarray, vocab_lib.Vocab]:
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    width = json.load(f)['data']['max_tgt_len']
  tgt_vocab = vocab_lib.load(os.path.join(workdir, 'vocab.tgt.json'))
  refs = raw_files.read_lines(references)[:n]
  out = np.full((len(refs), width), data_lib.PAD_ID, np.int32)
  for i, text in enumerate(refs):
    ids = list(tgt_vocab.encode(text))[: width - 1] + [data_lib.EOS_ID]
    out[i, : len(ids)] = ids
  return out, tgt_vocab


def main(argv):
  del argv
  refs, tgt_vocab = _rows(_WORKDIR.value, _REFERENCES.value, _PAIRS.value)
  hyps = np.roll(refs, 1, axis=0)
  fns = {
    'bleu_ids_jax': jax.jit(sequence_loss.bleu_cost),
    'chrf_text_host': jax.jit(lambda h, r: sequence_loss.chrf_cost(h, r, tgt_vocab)),
  }
  times = {name: [] for name in fns}
  for fn in fns.values():  # compile and warm up
    fn(hyps, refs).block_until_ready()
  for _ in range(_ROUNDS.value):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn(hyps, refs).block_until_ready()
      times[name].append(time.perf_counter() - start)
  result = {
    'workdir': _WORKDIR.value,
    'pairs': int(refs.shape[0]),
    'width': int(refs.shape[1]),
    'median_ms': {name: round(1000 * statistics.median(t), 2) for name, t in times.items()},
    'load_average_1m_at_end': os.getloadavg()[0],
    'dot_peak_gflops': resources.dot_peak_gflops(),
    'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
  }
  print(json.dumps(result, indent=2))
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
