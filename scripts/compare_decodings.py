"""A table of decodings of finished runs on one test set: validation and test scores, paired bootstrap p-values.

  python scripts/compare_decodings.py --reference=test2016.en \\
      --system='MLE, beam 5=/work/runs/m30k_strong' \\
      --system='MLE + MBR-chrF=/work/runs/m30k_strong:eps0.02.mbrchrf.seed0' ...

A system is NAME=WORKDIR[:TAG]: its test decoding is WORKDIR/eval_test[.TAG].hyp.txt with the scores of
eval_test[.TAG].json; its validation scores are those of eval_validation.TAG.json (`evaluate --split=validation`
with the same settings), or without a tag the training's record at the test checkpoint's step (metrics.jsonl).
p-values: sacreBLEU's paired bootstrap (PairedTest, --bootstrap_samples resamples, its default seed) of every system
against the first, for lowercased BLEU, cased BLEU and chrF. Prints a Markdown table (docs/results/multi30k.md).
"""

import json
import os

from absl import app
from absl import flags
from sacrebleu import metrics as sacrebleu_metrics
from sacrebleu import significance

_SYSTEMS = flags.DEFINE_multi_string('system', [], 'NAME=WORKDIR[:TAG]; the first is the baseline.')
_REFERENCE = flags.DEFINE_string('reference', None, 'The test references, one per line.')
_SAMPLES = flags.DEFINE_integer('bootstrap_samples', 1000, 'Resamples of the paired bootstrap.')
flags.mark_flag_as_required('reference')


def _json(path: str) -> dict:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _lines(path: str) -> list[str]:
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def _system(spec: str) -> dict:
  name, _, where = spec.partition('=')
  workdir, _, tag = where.partition(':')
  suffix = f'.{tag}' if tag else ''
  test = _json(os.path.join(workdir, f'eval_test{suffix}.json'))
  if tag:
    valid = _json(os.path.join(workdir, f'eval_validation{suffix}.json'))
    valid = {'bleu_lc': valid['bleu_lc'], 'chrf': valid['chrf']}
  else:
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
      records = [json.loads(line) for line in f]
    record = [r for r in records if r.get('step') == test['checkpoint_step'] and 'eval/bleu_lc' in r][-1]
    valid = {'bleu_lc': record['eval/bleu_lc'], 'chrf': record['eval/chrf']}
  hyps = _lines(os.path.join(workdir, f'eval_test{suffix}.hyp.txt'))
  return {'name': name, 'valid': valid, 'test': test, 'hyps': hyps}


def main(argv):
  del argv
  systems = [_system(spec) for spec in _SYSTEMS.value]
  refs = _lines(_REFERENCE.value)
  p = {}  # (lowercase, metric) -> [score results per system]
  for lowercase in (True, False):
    test = significance.PairedTest(
      [(s['name'], s['hyps']) for s in systems],
      {'BLEU': sacrebleu_metrics.BLEU(lowercase=lowercase), 'chrF': sacrebleu_metrics.CHRF()},
      references=[refs],
      test_type='bs',
      n_samples=_SAMPLES.value,
    )
    sigs, scores = test()
    p[lowercase] = scores
    for key, sig in sigs.items():
      print(f'- {key}: `{sig.format()}`')
  header = 'valid. BLEU lc | valid. chrF | test BLEU lc (p) | test BLEU (p) | test chrF (p) | len ratio | decode s'
  print(f'| system | {header} |')
  print('|---|---:|---:|---:|---:|---:|---:|---:|')
  for i, s in enumerate(systems):
    cell = lambda r, i=i: f'{r.score:.2f}' + ('' if i == 0 else f' ({r.p_value:.3f})')
    t = s['test']
    print(
      f'| {s["name"]} | {s["valid"]["bleu_lc"]:.2f} | {s["valid"]["chrf"]:.2f} | {cell(p[True]["BLEU"][i])} | '
      f'{cell(p[False]["BLEU"][i])} | {cell(p[False]["chrF2"][i])} | {t["len_ratio"]:.3f} | {t["decode_s"]:.0f} |'
    )


if __name__ == '__main__':
  app.run(main)
