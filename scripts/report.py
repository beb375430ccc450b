"""Tables, significance tests and figures for a sweep root (or any folder of runs).

  python scripts/report.py --root=/tmp/smoke [--baseline=attention=none_concat] [--split=test] [--storage=URL]

Runs: the directories of ROOT with a config.json (`<run>/seed_*/` sub-runs of num_seeds > 1 replace their parent).
Variants: the values of sweep.json's swept keys except seed (no sweep.json: each top-level directory). Writes
results.csv (a row per run: `run, config, <swept keys>, seed, num_params, train_s, best_step, eval/*, <split>/*`;
eval/* is the validation record at best_step, the checkpoint <split>/* scores, or the last one without best/;
num_params from jax.eval_shape of the model's init; train_s the wall_s of the last train record), results_agg.csv
(a row per variant: `variant, <swept keys>, n, <metric>_{mean,std,ci95}`; sample std and half-width of the 95%
t-interval, blank for n=1), and report.md with figures/*.png: that table, sacreBLEU's paired bootstrap of each
variant's first seed against the baseline, learning curves, scores per source length and attention heatmaps.
Runs without DONE get a row in results.csv and a warning; every aggregate, test and figure leaves them out.
The per-length figure and the significance test read only each run's own eval_<split>.json / .hyp.txt (the
training's test evaluation): a file that `evaluate --name=<split>` replaced with other settings is left out with a
warning (`evaluate` otherwise writes eval_<split>.<tag>.json, which this report never reads).
"""

import csv
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # (its library modules, also when loaded by path)
# pylint: disable=g-import-not-at-top,wrong-import-position
import report_figures
import report_runs
import report_study

from s2s_jax import fileio
from s2s_jax import metrics as metrics_lib
from s2s_jax import sweep_lib

# pylint: enable=g-import-not-at-top,wrong-import-position

_ROOT = flags.DEFINE_string('root', None, 'A sweep root (scripts/sweep.py --root) or any folder of run workdirs.')
_BASELINE = flags.DEFINE_string(
  'baseline',
  None,
  'A run name or a variant (e.g. attention=none_concat); default: the first run of sweep.json (or of the folder).',
)
_SPLIT = flags.DEFINE_string('split', 'test', 'The test split whose records, hypotheses and references are used.')
_NUM_ATTENTION = flags.DEFINE_integer('num_attention_sentences', 2, 'First sentences of the split shown as heatmaps.')
_SAMPLES = flags.DEFINE_integer('bootstrap_samples', 1000, 'Resamples of the paired bootstrap.')
_STORAGE = flags.DEFINE_string(
  'storage',
  None,
  "The Optuna storage URL of a scripts/tune.py root (default: study.json's, which holds no password: give the URL "
  'with its password here, or let the database driver read it, e.g. from PGPASSWORD or ~/.pgpass).',
)
flags.mark_flag_as_required('root')

_SACREBLEU = (('BLEU', 'BLEU'), ('chrF', 'chrF2'))  # PairedTest metric key, the name of its scores


def _write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
  with fileio.replacing(path, newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)


def aggregate(variants: dict[str, list[dict]], keys: list[str], metrics: list[str]) -> list[dict]:
  """A row per variant: its swept values, n, and mean / std / ci95 of each metric over its runs."""
  out = []
  for name, rows in variants.items():
    agg = {'variant': name, **{k: rows[0].get(k, '') for k in keys}, 'n': len(rows)}
    for m in metrics:
      if values := [r[m] for r in rows if isinstance(r.get(m), (int, float))]:
        agg[f'{m}_mean'], agg[f'{m}_std'], agg[f'{m}_ci95'] = metrics_lib.mean_std_ci95(values)
    out.append(agg)
  return out


def agg_markdown(agg: list[dict], metrics: list[str]) -> list[str]:
  """A row per variant, each cell `mean ± ci95` (the mean alone for one run)."""
  cols = [m for m in metrics if any(f'{m}_mean' in a for a in agg)]
  lines = ['| variant | n | ' + ' | '.join(cols) + ' |', '|---|---:|' + '---:|' * len(cols)]
  for a in agg:
    cells = [
      (f'{a[f"{m}_mean"]:.4g}' if f'{m}_mean' in a else '')
      + (f' ± {round(a[f"{m}_ci95"], 12):.2g}' if a.get(f'{m}_ci95') is not None else '')
      for m in cols
    ]
    lines.append(f'| {a["variant"]} | {a["n"]} | ' + ' | '.join(cells) + ' |')
  return lines


def significance(base: dict, others: list[tuple[str, dict]], split: str, n_samples: int, cache: dict) -> list[str]:
  """Markdown: sacreBLEU's paired bootstrap (PairedTest, test_type='bs') of each variant against the baseline."""
  from sacrebleu import metrics as sacrebleu_metrics  # pylint: disable=g-import-not-at-top
  from sacrebleu import significance as significance_lib  # pylint: disable=g-import-not-at-top

  refs, hyp_file = report_runs.split_data(base, split, cache)[0].targets, f'eval_{split}.hyp.txt'
  fmt_p = lambda p: f'{p:.4f}' + (' *' if p < 0.05 else '')  # pylint: disable=unnecessary-lambda-assignment

  def own_hyps(run: dict) -> list[str] | None:
    path = report_runs.own_eval(run, split)[1]
    return report_runs.read_lines(path) if path else None

  systems, notes = [('(baseline)', base, own_hyps(base))], []
  if systems[0][2] is None or len(systems[0][2]) != len(refs):
    return [
      f"No test: the baseline's {hyp_file} is missing, not the training's own, or does not have one line per "
      f'reference ({len(refs)}).'
    ]
  for variant, run in others:
    hyps = own_hyps(run)
    if hyps is None or len(hyps) != len(refs) or report_runs.split_data(run, split, cache)[0].targets != refs:
      notes.append(
        f"- {variant}: not tested ({hyp_file} missing or not the training's own, or not paired with the baseline's "
        'references).'
      )
    else:
      systems.append((variant, run, hyps))
  test = significance_lib.PairedTest(
    [(run['name'], hyps) for _, run, hyps in systems],
    {'BLEU': sacrebleu_metrics.BLEU(), 'chrF': sacrebleu_metrics.CHRF()},
    references=[refs],
    test_type='bs',
    n_samples=n_samples,
  )
  sigs, scores = test()
  seed = test._seed  # pylint: disable=protected-access  (sacreBLEU's SACREBLEU_SEED, 12345 by default)
  exact = 'exact_match' in str(base['config'].get('eval.scores', ''))
  names = [name for _, name in _SACREBLEU] + ['exact match'] * exact
  lines = [
    '| variant | run | ' + ' | '.join(f'{n} (Δ) | {n} p' for n in names) + ' |',
    '|---|---|' + '---:|' * 2 * len(names),
  ]
  matches = [np.array([h.strip() == r.strip() for h, r in zip(hyps, refs)]) for _, _, hyps in systems]
  for i, (variant, run, hyps) in enumerate(systems):
    cells = []
    for _, name in _SACREBLEU:
      r, b = scores[name][i], scores[name][0]
      same = hyps == systems[0][2]  # sacreBLEU's p is 1 / (n + 1) for identical outputs; the difference is 0
      cells += [f'{r.score:.2f} ({r.score - b.score:+.2f})', '' if i == 0 else '1 (same)' if same else fmt_p(r.p_value)]
    if exact:
      em, p = metrics_lib.paired_bootstrap_exact_match(matches[0], matches[i], n_samples, seed)
      cells += [f'{em:.2f} ({em - 100.0 * matches[0].mean():+.2f})', '' if i == 0 else fmt_p(p)]
    lines.append(f'| {variant} | {run["name"]} | ' + ' | '.join(cells) + ' |')
  lines += [''] + notes + [f'- sacreBLEU signature, {k}: `{v.format()}`' for k, v in sigs.items()]
  return (
    lines
    + [
      "- Exact match is not a sacreBLEU metric, so sacreBLEU's test cannot score it; its p-value comes "
      'from the same paired bootstrap recipe (the same resampled sentences, seed and p-value formula) '
      'applied to per-sentence matches (`metrics.paired_bootstrap_exact_match`).'
    ]
    * exact
  )


def resolve_baseline(spec: str | None, runs: list[dict], firsts: dict[str, dict]) -> tuple[str, dict]:
  """(variant, run) of --baseline: a run name, a variant (its first seed) or a unique part of one (key=value,...),
  or by default the first finished run."""
  if named := [r for r in runs if r['name'] == spec] if spec else [next(r for r in runs if r['done'])]:
    if not named[0]['done']:
      raise app.UsageError(f'--baseline={spec}: that run has not finished (no DONE).')
    return named[0]['variant'], named[0]
  if spec in firsts:
    return spec, firsts[spec]
  # Or the one variant holding every key=value of the spec (variants name all swept keys, runs only those set).
  wanted = set(spec.split(','))
  if len(matches := [v for v in firsts if wanted <= set(v.split(','))]) == 1:
    return matches[0], firsts[matches[0]]
  if matches:
    raise app.UsageError(f'--baseline={spec!r} matches several variants ({", ".join(matches)}); add keys.')
  raise app.UsageError(
    f'--baseline={spec!r} is neither a finished run ({", ".join(r["name"] for r in runs)}) nor a '
    f'variant ({", ".join(firsts)}).'
  )


def decoding_markdown(runs: list[dict], evaluations: list[dict]) -> list[str]:
  """The sweep's EVALUATIONS (decode settings scored on the test split) per finished run, as tables."""
  if not evaluations:
    return []
  keys = [k for k in evaluations[0] if k != 'name']
  cols = ('bleu', 'bleu_lc', 'chrf', 'exact_match', 'len_ratio', 'sentences_per_s')
  lines = [
    '## Decoding settings',
    '',
    "Each finished run's test split decoded with every setting of the sweep's EVALUATIONS (`eval_<name>.json`).",
    '',
  ]
  for run in runs:
    results = [
      (e, report_runs.read(os.path.join(run['workdir'], f'eval_{e["name"]}.json'), json.loads)) for e in evaluations
    ]
    results = [(e, r) for e, r in results if r]
    if not results:
      continue
    present = [c for c in cols if c in results[0][1]]
    lines += [
      f'### {run["name"]}',
      '',
      '| ' + ' | '.join(keys + present) + ' |',
      '|' + '---:|' * (len(keys) + len(present)),
    ]
    lines += [
      '| ' + ' | '.join([str(e[k]) for k in keys] + [f'{r[c]:.4g}' for c in present]) + ' |' for e, r in results
    ]
    lines.append('')
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.get_verbosity() if flags.FLAGS['verbosity'].present else logging.WARNING)
  root, split = os.path.abspath(_ROOT.value), _SPLIT.value
  sweep = report_runs.read(os.path.join(root, 'sweep.json'))
  if not (runs := report_runs.find_runs(root, sweep) if os.path.isdir(root) else []):
    sys.exit(f'No runs in {root}: expected run directories with a config.json (as scripts/sweep.py --root writes).')
  test_prefix = 'test' if split == 'test' else split
  keys = [k for k in (sweep or {}).get('swept_keys', []) if k != 'seed']
  param_cache, data_cache, variants = {}, {}, {}
  rows = {run['name']: report_runs.run_row(run, keys, test_prefix, param_cache) for run in runs}
  metrics = report_runs.metric_columns(list(rows.values()), test_prefix)
  _write_csv(
    os.path.join(root, 'results.csv'),
    ['run', 'config', *keys, 'seed', 'num_params', 'train_s', 'best_step', *metrics],
    list(rows.values()),
  )
  if unfinished := [r['name'] for r in runs if not r['done']]:
    print(f'WARNING: unfinished runs (no DONE; left out of aggregates): {", ".join(unfinished)}', file=sys.stderr)
  for run in runs:
    run['variant'] = sweep_lib.run_name({k: run['config'].get(k) for k in keys}, keys) if sweep else run['group']
    if run['done']:
      variants.setdefault(run['variant'], []).append(run)
  variants = {v: sorted(rs, key=lambda r: (r['seed'], r['name'])) for v, rs in variants.items()}
  agg = aggregate({v: [rows[r['name']] for r in rs] for v, rs in variants.items()}, keys, metrics)
  _write_csv(
    os.path.join(root, 'results_agg.csv'),
    ['variant', *keys, 'n', *(f'{m}_{s}' for m in metrics for s in ('mean', 'std', 'ci95'))],
    agg,
  )
  lines = [
    f'# Report: {root}',
    '',
    f'Sweep `{(sweep or {}).get("sweep", "(no sweep.json)")}`: {len(runs)} runs '
    f'({len(runs) - len(unfinished)} finished) in {len(variants)} variants; split `{split}`.',
    '',
  ]
  if unfinished:
    lines += [f'**Warning:** unfinished runs (no DONE), left out of everything below: {", ".join(unfinished)}.', '']
  if os.path.exists(os.path.join(root, 'study.json')):
    os.makedirs(os.path.join(root, 'figures'), exist_ok=True)
    lines += report_study.study_markdown(root, os.path.join(root, 'figures'), _STORAGE.value)
  if variants:
    firsts = {v: rs[0] for v, rs in variants.items()}
    base_variant, base = resolve_baseline(_BASELINE.value, runs, firsts)
    metric = base['config'].get('eval.metric', 'loss')
    shown = [m for m in metrics if m.startswith(test_prefix + '/') and m.partition('/')[2] not in report_runs.TIMING]
    lines += [
      '## Results (mean ± half-width of the 95% t-interval over seeds; n = finished runs)',
      '',
      *agg_markdown(agg, shown + [m for m in (f'eval/{metric}', 'eval/loss') if m in metrics]),
      '',
      f'`{test_prefix}/*`: the best checkpoint (by eval/{metric}) scored on the whole `{split}` split; '
      '`eval/*`: the validation record at that step. Standard deviations and every metric: results_agg.csv; '
      'each run: results.csv.',
      '',
      f'## Significance against the baseline `{base_variant}` (run `{base["name"]}`)',
      '',
      f"sacreBLEU's paired bootstrap resampling (`sacrebleu.significance.PairedTest`, test_type=bs, "
      f"{_SAMPLES.value} resamples) of each variant's first seed (`eval_{split}.hyp.txt`) against the "
      f"baseline's, on the `{split}` references; p < 0.05 is marked *.",
      '',
      *significance(base, [(v, r) for v, r in firsts.items() if v != base_variant], split, _SAMPLES.value, data_cache),
      '',
      *decoding_markdown([r for rs in variants.values() for r in rs], (sweep or {}).get('evaluations', [])),
      *report_figures.figures_markdown(root, variants, firsts, metric, split, _NUM_ATTENTION.value, data_cache),
    ]
  with fileio.replacing(path := os.path.join(root, 'report.md')) as f:
    f.write('\n'.join(lines) + '\n')
  print(path)


if __name__ == '__main__':
  app.run(main)
