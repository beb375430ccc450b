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
import functools
import glob
import json
import math
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import attention as attention_lib
from s2s_jax import config_lib
from s2s_jax import fileio
from s2s_jax import metrics as metrics_lib
from s2s_jax import redact
from s2s_jax import sweep_lib
from s2s_jax.data import raw_files
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
_FIRST = ('exact_match', 'bleu', 'bleu_lc', 'bleu_tok', 'chrf', 'rougeL', 'wer', 'cer', 'loss', 'perplexity')
_TIMING = ('decode_s', 'sentences_per_s')


def _lines(path: str) -> list[str] | None:
  """The lines of a text file as every reader of the project splits them (at \\n only), or None when it does not
  exist: a hypothesis containing U+2028 or a form feed stays one line, aligned with its reference."""
  return raw_files.read_lines(path) if os.path.exists(path) else None


def _read(path: str, parse=json.loads):
  """parse(text of the file), or None when it does not exist."""
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      return parse(f.read())
  return None


def _best_step(workdir: str) -> int | None:
  best = os.path.join(workdir, 'best')
  steps = [int(d) for d in os.listdir(best) if d.isdigit()] if os.path.isdir(best) else []
  return max(steps) if steps else None


def own_eval(run: dict, split: str) -> tuple[dict | None, str | None]:
  """(eval_<split>.json of the run, the path of its eval_<split>.hyp.txt) when they are the training's own test
  evaluation, else (None, None) with a warning (once per run): an `evaluate` with other settings written under that
  name (`--name=<split>`; its `tag` names the difference), or an older file scoring another step than best/'s."""
  return _own_eval(run['workdir'], run['name'], split)


@functools.lru_cache(maxsize=None)
def _own_eval(workdir: str, name: str, split: str) -> tuple[dict | None, str | None]:
  path = os.path.join(workdir, f'eval_{split}.json')
  result = _read(path)
  if result is None:
    return None, None
  best, why = _best_step(workdir), None
  if result.get('tag'):
    why = f'other settings: {result["tag"]}'
  elif best is not None and result.get('checkpoint_step') not in (None, best):
    why = f'step {result.get("checkpoint_step")}, not the best step {best}'
  if why:
    print(
      f"WARNING: {name}: {path} is not the training's own evaluation ({why}); left out of the per-length figure "
      "and the significance test. Evaluate again with the training's settings to restore it.",
      file=sys.stderr,
    )
    return None, None
  return result, os.path.join(workdir, f'eval_{split}.hyp.txt')


def _config_flag(folders: tuple[str, ...], sweep: dict | None) -> str:
  """The --config=FILE[:arg] a run was started with (its provenance.json, else sweep.json)."""
  for folder in folders:
    for item in (_read(os.path.join(folder, 'provenance.json')) or {}).get('command_line', []):
      if item.startswith('--config='):
        return item.partition('=')[2]
  return sweep['config'] + (f':{sweep["config_arg"]}' if sweep.get('config_arg') else '') if sweep else ''


def _seed_of(path: str) -> int:
  return int(re.sub(r'\D', '', os.path.basename(path)) or 0)


def find_runs(root: str, sweep: dict | None) -> list[dict]:
  """Runs in sweep.json order, then the other run directories sorted; seed_* sub-runs replace their parent."""
  names = [r['name'] for r in (sweep or {}).get('runs', [])]
  names += sorted(n for n in os.listdir(root) if n not in names and os.path.isdir(os.path.join(root, n)))
  runs = []
  for name in names:
    parent = os.path.join(root, name)
    subs = sorted((d for d in glob.glob(os.path.join(parent, 'seed_*')) if os.path.isdir(d)), key=_seed_of)
    for workdir in subs or [parent]:
      own = _read(os.path.join(workdir, 'config.json'))
      if (raw := own or _read(os.path.join(parent, 'config.json'))) is None:
        continue
      config, lines = config_lib.flatten(raw), _lines(os.path.join(workdir, 'metrics.jsonl')) or []
      runs.append(
        dict(
          name=os.path.relpath(workdir, root),
          workdir=workdir,
          group=name,
          raw=raw,
          config=config,
          seed=config.get('seed', 0) if own else _seed_of(workdir),
          config_flag=_config_flag((workdir, parent), sweep),
          records=[json.loads(x) for x in lines if x.strip().endswith('}')],  # not a cut last line
          done=any(os.path.exists(os.path.join(d, 'DONE')) for d in {workdir, parent}),
        )
      )
  return runs


def count_params(saved_config: dict, cache: dict) -> int:
  """Parameters of a run's model, counted from the shapes of its init (no checkpoint, no computation)."""
  import jax  # pylint: disable=g-import-not-at-top
  from s2s_jax import models  # pylint: disable=g-import-not-at-top

  config = config_lib.from_saved(saved_config)
  key = json.dumps(config_lib.to_dict(config.model), sort_keys=True)
  if key not in cache:
    src, tgt = (jax.ShapeDtypeStruct((1, n), np.int32) for n in (config.data.max_src_len, config.data.max_tgt_len))
    model = models.Seq2Seq(config_lib.model_config(config))
    shapes = jax.eval_shape(model.init, jax.random.key(0), src, src, tgt)['params']
    cache[key] = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  return cache[key]


def _last(records: list[dict], prefix: str, step: int | None = None) -> dict:
  """The `prefix/*` metrics of the last record that has some (the last one at `step`, where there is one)."""
  hits = [r for r in records if any(k.startswith(prefix + '/') for k in r)]
  record = ([r for r in hits if r['step'] == step] or hits or [{}])[-1]
  return {k: v for k, v in record.items() if k.startswith(prefix + '/')}


def run_row(run: dict, keys: list[str], test_prefix: str, cache: dict) -> dict:
  row = {
    'run': run['name'],
    'config': run['config_flag'],
    **{k: run['config'].get(k, '') for k in keys},
    'seed': run['seed'],
    'num_params': '',
  }
  try:
    row['num_params'] = count_params(run['raw'], cache)
  except Exception as e:  # pylint: disable=broad-except  (a row without a count beats no report)
    print(f'WARNING: {run["name"]}: cannot count parameters ({type(e).__name__}: {e}).', file=sys.stderr)
  train = [r for r in run['records'] if any(k.startswith('train/') for k in r)]
  best = _best_step(run['workdir'])
  row.update(train_s=train[-1]['wall_s'] if train else '', best_step='' if best is None else best)
  return {**row, **_last(run['records'], 'eval', best), **_last(run['records'], test_prefix)}


def metric_columns(rows: list[dict], test_prefix: str) -> list[str]:
  def order(col):
    name = col.partition('/')[2]
    return (name in _TIMING, _FIRST.index(name) if name in _FIRST else len(_FIRST), name)

  return [
    c
    for prefix in ('eval', test_prefix)
    for c in sorted({k for r in rows for k in r if k.startswith(prefix + '/')}, key=order)
  ]


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


def split_data(run: dict, split: str, cache: dict):
  """(`split` of the run's prepared data, the padded source length); runs with the same data config share it."""
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  config = config_lib.from_saved(run['raw'])
  key = json.dumps(config_lib.to_dict(config.data), sort_keys=True)
  if key not in cache:
    cache[key] = pipeline.prepare(config.data, vocab_dir=run['workdir'])
  if split not in cache[key].splits:
    raise app.UsageError(f"--split={split!r} is not a split of {run['name']}'s data: {sorted(cache[key].splits)}.")
  return cache[key].splits[split], cache[key].src_len


def significance(base: dict, others: list[tuple[str, dict]], split: str, n_samples: int, cache: dict) -> list[str]:
  """Markdown: sacreBLEU's paired bootstrap (PairedTest, test_type='bs') of each variant against the baseline."""
  from sacrebleu import metrics as sacrebleu_metrics  # pylint: disable=g-import-not-at-top
  from sacrebleu import significance as significance_lib  # pylint: disable=g-import-not-at-top

  refs, hyp_file = split_data(base, split, cache)[0].targets, f'eval_{split}.hyp.txt'
  fmt_p = lambda p: f'{p:.4f}' + (' *' if p < 0.05 else '')  # pylint: disable=unnecessary-lambda-assignment

  def own_hyps(run: dict) -> list[str] | None:
    path = own_eval(run, split)[1]
    return _lines(path) if path else None

  systems, notes = [('(baseline)', base, own_hyps(base))], []
  if systems[0][2] is None or len(systems[0][2]) != len(refs):
    return [
      f"No test: the baseline's {hyp_file} is missing, not the training's own, or does not have one line per "
      f'reference ({len(refs)}).'
    ]
  for variant, run in others:
    hyps = own_hyps(run)
    if hyps is None or len(hyps) != len(refs) or split_data(run, split, cache)[0].targets != refs:
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


def _figure(path: str, panels: int, draw) -> None:
  """Draws `panels` side-by-side axes with draw(axes) and writes a PNG; one legend below them all (variant names
  are long, and a legend inside the axes hid the curves)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, panels, figsize=(5.5 * max(panels, 2), 4), squeeze=False)
  draw(axes[0])
  for ax in axes[0]:
    ax.grid(alpha=0.3)
  handles, labels = axes[0][0].get_legend_handles_labels()
  legend_h = 0.2 * len(labels) + 0.2
  fig.set_size_inches(fig.get_size_inches()[0], 4 + legend_h)
  fig.legend(handles, labels, loc='lower center', fontsize=8, frameon=False)
  fig.tight_layout(rect=(0, legend_h / (4 + legend_h), 1, 1))
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _mean_curve(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, std) of `key` over the runs' records, at every step where some run logged it."""
  by_step = {}
  for run in runs:
    for r in run['records']:
      if isinstance(r.get(key), (int, float)):
        by_step.setdefault(r['step'], {})[run['name']] = r[key]
  values = [np.array(list(by_step[s].values()), np.float64) for s in sorted(by_step)]
  return np.array(sorted(by_step)), np.array([v.mean() for v in values]), np.array([v.std() for v in values])


def plot_learning_curves(path: str, variants: dict[str, list[dict]], metric: str) -> None:
  def draw(axes):
    for ax, key in zip(axes, (f'eval/{metric}', 'train/loss')):
      for name, runs in variants.items():
        steps, mean, std = _mean_curve(runs, key)
        (line,) = ax.plot(steps, mean, marker='.', label=f'{name} (n={len(runs)})')
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
      ax.set(xlabel='step', ylabel=key, title=f'{key} (mean ± std over seeds)')

  _figure(path, 2, draw)


def plot_by_length(path: str, variants: dict[str, list[dict]], split: str) -> list[str]:
  """Score per source-length bucket (the runs' own eval_<split>.json, `own_eval`) per variant, mean ± std over
  seeds; the metrics drawn."""
  evals = {v: [own_eval(r, split)[0] or {} for r in runs] for v, runs in variants.items()}
  found = [m for m in ('exact_match', 'bleu') if all(e.get(f'{m}_by_src_len') for es in evals.values() for e in es)]

  def draw(axes):
    for ax, m in zip(axes, found):
      per = {}  # (min_len, max_len) -> variant -> scores over seeds, and the bucket's sentence count
      for v, es in evals.items():
        for b in (b for e in es for b in e[f'{m}_by_src_len']):
          per.setdefault((b['min_len'], b['max_len']), {'n': b['n']}).setdefault(v, []).append(b[m])
      buckets = sorted(per)
      for v in evals:
        x = [i for i, b in enumerate(buckets) if v in per[b]]
        ax.errorbar(
          x,
          [np.mean(per[buckets[i]][v]) for i in x],
          yerr=[np.std(per[buckets[i]][v]) for i in x],
          marker='o',
          capsize=3,
          label=f'{v} (n={len(evals[v])})',
        )
      ax.set_xticks(range(len(buckets)), [f'{lo}-{hi}\n({per[(lo, hi)]["n"]})' for lo, hi in buckets], fontsize=8)
      ax.set(xlabel='source tokens (sentences)', ylabel=f'{split} {m}', title=f'{split} {m} by source length')

  if found:
    _figure(path, len(found), draw)
  return found


def attention_figures(
  fig_dir: str, firsts: dict[str, dict], split: str, num: int, cache: dict
) -> tuple[dict[str, list[str]], list[str]]:
  """Heatmaps of the split's first `num` sentences decoded by each variant's first seed's best checkpoint.

  Returns ({variant: PNG file names}, [variants without attention]).
  """
  import flax  # pylint: disable=g-import-not-at-top
  from s2s_jax import decode  # pylint: disable=g-import-not-at-top
  from s2s_jax import inference  # pylint: disable=g-import-not-at-top
  from s2s_jax import plots  # pylint: disable=g-import-not-at-top

  pngs, skipped = {}, []
  for variant, run in firsts.items():
    if run['config'].get('model.attention') in attention_lib.NO_ATTENTION:
      skipped.append(variant)
      continue
    loaded = inference.load(run['workdir'], 'best')
    data, src_len = split_data(run, split, cache)
    examples, slug = data.src_ids[:num], re.sub(r'[^A-Za-z0-9_.-]+', '_', variant)
    options = decode.options(loaded.config.decode, loaded.config.data.max_tgt_len, return_attention=True)
    decoder = inference.Decoder(loaded.model, options, loaded.tgt_vocab, src_len=src_len, batch_size=len(examples))
    results = decoder(flax.jax_utils.replicate(loaded.params), examples, lambda x: len(loaded.memory_labels(x)))
    pngs[variant] = [f'attention_{slug}_{i + 1}.png' for i in range(len(examples))]
    for png, example, hyps in zip(pngs[variant], examples, results):
      plots.save_attention_heatmap(
        os.path.join(fig_dir, png),
        np.asarray(hyps.attention[0]),
        loaded.memory_labels(example),
        hyps.tokens[0],
        title=f'{variant}: {hyps.texts[0]} (step {loaded.step})',
      )
  return pngs, skipped


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


def figures_markdown(root: str, variants: dict, firsts: dict, metric: str, split: str, cache: dict) -> list[str]:
  fig_dir = os.path.join(root, 'figures')
  os.makedirs(fig_dir, exist_ok=True)
  plot_learning_curves(os.path.join(fig_dir, 'learning_curves.png'), variants, metric)
  lines = [
    '## Figures',
    '',
    f'### Learning curves: eval/{metric} and train/loss (mean ± std over seeds)',
    '',
    '![learning curves](figures/learning_curves.png)',
    '',
    f'### {split} score by source length',
    '',
  ]
  if found := plot_by_length(os.path.join(fig_dir, 'score_by_src_len.png'), variants, split):
    lines += [
      f'{" and ".join(found)} per source-length bucket (sentences per bucket under each label), mean ± std over seeds.',
      '',
      '![score by source length](figures/score_by_src_len.png)',
      '',
    ]
  else:
    lines += [f"No per-length scores in the runs' eval_{split}.json.", '']
  pngs, skipped = attention_figures(fig_dir, firsts, split, _NUM_ATTENTION.value, cache)
  data, _ = split_data(next(iter(firsts.values())), split, cache)
  lines += (
    [f"### Attention: the first {split} sentences, decoded by the best checkpoint of each variant's first seed", '']
    + [
      f'{i + 1}. source `{data.sources[i]}`, reference `{data.targets[i]}`'
      for i in range(min(_NUM_ATTENTION.value, len(data)))
    ]
    + ['']
  )
  for variant, files in pngs.items():
    lines += [f'#### {variant}', '', *(f'![attention {variant} {i + 1}](figures/{f})' for i, f in enumerate(files)), '']
  if skipped:
    lines += [f'No attention in {", ".join(skipped)} (model.attention none_init / none_concat): no heatmaps.', '']
  return lines


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
    results = [(e, _read(os.path.join(run['workdir'], f'eval_{e["name"]}.json'), json.loads)) for e in evaluations]
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


def load_study(info: dict, storage: str | None):
  """The study study.json names, from `storage` (--storage) or study.json's URL; a redacted URL is tried without its
  hidden password (the driver may read it from its own place). An error names the URL with its password hidden."""
  import optuna  # pylint: disable=g-import-not-at-top

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  hidden = not storage and redact.has_hidden(info['storage'])
  url = redact.without_hidden(info['storage']) if hidden else storage or info['storage']
  try:
    return optuna.load_study(study_name=info['study_name'], storage=url)
  except Exception as e:  # pylint: disable=broad-except  (any storage error: one line naming what to do)
    hint = ' (study.json keeps no password: pass --storage=URL)' if hidden else ''
    sys.exit(redact.text(f'Cannot open the study in {redact.url(url)}{hint}: {type(e).__name__}: {e}', url))


def study_markdown(root: str, fig_dir: str, storage: str | None = None) -> list[str]:
  """The Optuna study of a scripts/tune.py root: the trials (parameters, value, state, wall time), the best trial's
  command, the parameter importances and the optimization history (figures/study_*.png). Storage URLs are shown
  with their passwords hidden."""
  import optuna  # pylint: disable=g-import-not-at-top
  from optuna.visualization import matplotlib as optuna_plots  # pylint: disable=g-import-not-at-top

  info = _read(os.path.join(root, 'study.json'))
  study = load_study(info, storage)
  shown = redact.url(storage or info['storage'])
  trials = study.get_trials(deepcopy=False)
  names = sorted({p for t in trials for p in t.params})
  lines = [
    f'## Search `{info["space"]}`: {info["metric"]} ({info["direction"]})',
    '',
    f'{len(trials)} trials in `{shown}` (study `{study.study_name}`; live view: `optuna-dashboard {shown}`).',
    '',
    '| trial | ' + ' | '.join(names) + f' | best {info["metric"]} | state | wall time (s) |',
    '|---:|' + '---|' * len(names) + '---:|---|---:|',
  ]
  for t in trials:
    value = f'{t.value:.4g}' if t.value is not None else ''
    wall = f'{t.user_attrs["wall_s"]:.0f}' if 'wall_s' in t.user_attrs else ''
    params = ' | '.join(
      f'{t.params[n]:.4g}' if isinstance(t.params.get(n), float) else str(t.params.get(n, '')) for n in names
    )
    lines.append(f'| {t.number} | {params} | {value} | {t.state.name.lower()} | {wall} |')
  complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
  if complete:
    best = study.best_trial
    lines += [
      '',
      f'Best: trial {best.number}, {info["metric"]} = {best.value:.4g}:',
      '',
      '```bash',
      f'python {best.user_attrs.get("command", "")}',
      '```',
      '',
    ]
    figures = []
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

    plots = [('study_history.png', optuna_plots.plot_optimization_history)]
    if len(complete) >= 2 and names:
      plots.append(('study_importances.png', optuna_plots.plot_param_importances))
    for name, plot in plots:
      ax = plot(study)
      ax.figure.set_size_inches(7, 4.5)
      ax.figure.tight_layout()
      ax.figure.savefig(os.path.join(fig_dir, name), dpi=90)
      plt.close(ax.figure)
      figures.append(f'![{name}](figures/{name})')
    lines += figures + ['']
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.get_verbosity() if flags.FLAGS['verbosity'].present else logging.WARNING)
  root, split = os.path.abspath(_ROOT.value), _SPLIT.value
  sweep = _read(os.path.join(root, 'sweep.json'))
  if not (runs := find_runs(root, sweep) if os.path.isdir(root) else []):
    sys.exit(f'No runs in {root}: expected run directories with a config.json (as scripts/sweep.py --root writes).')
  test_prefix = 'test' if split == 'test' else split
  keys = [k for k in (sweep or {}).get('swept_keys', []) if k != 'seed']
  param_cache, data_cache, variants = {}, {}, {}
  rows = {run['name']: run_row(run, keys, test_prefix, param_cache) for run in runs}
  metrics = metric_columns(list(rows.values()), test_prefix)
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
    lines += study_markdown(root, os.path.join(root, 'figures'), _STORAGE.value)
  if variants:
    firsts = {v: rs[0] for v, rs in variants.items()}
    base_variant, base = resolve_baseline(_BASELINE.value, runs, firsts)
    metric = base['config'].get('eval.metric', 'loss')
    shown = [m for m in metrics if m.startswith(test_prefix + '/') and m.partition('/')[2] not in _TIMING]
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
      *figures_markdown(root, variants, firsts, metric, split, data_cache),
    ]
  with fileio.replacing(path := os.path.join(root, 'report.md')) as f:
    f.write('\n'.join(lines) + '\n')
  print(path)


if __name__ == '__main__':
  app.run(main)
