"""The figures of a report (scripts/report.py): learning curves, scores per source length and attention heatmaps, with
their part of report.md. A library of scripts/report.py (no flags)."""

import os
import re

import numpy as np
import report_runs

from s2s_jax import attention as attention_lib


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
  evals = {v: [report_runs.own_eval(r, split)[0] or {} for r in runs] for v, runs in variants.items()}
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
  from s2s_jax import decode  # pylint: disable=g-import-not-at-top
  from s2s_jax import inference  # pylint: disable=g-import-not-at-top
  from s2s_jax import parallel  # pylint: disable=g-import-not-at-top
  from s2s_jax import plots  # pylint: disable=g-import-not-at-top

  pngs, skipped = {}, []
  for variant, run in firsts.items():
    if run['config'].get('model.attention') in attention_lib.NO_ATTENTION:
      skipped.append(variant)
      continue
    loaded = inference.load(run['workdir'], 'best')
    data, src_len = report_runs.split_data(run, split, cache)
    examples, slug = data.src_ids[:num], re.sub(r'[^A-Za-z0-9_.-]+', '_', variant)
    options = decode.options(loaded.config.decode, loaded.config.data.max_tgt_len, return_attention=True)
    decoder = inference.Decoder(loaded.model, options, loaded.tgt_vocab, src_len=src_len, batch_size=len(examples))
    results = decoder(
      parallel.replicate(loaded.params), examples, lambda x, loaded=loaded: len(loaded.memory_labels(x))
    )
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


def figures_markdown(
  root: str, variants: dict, firsts: dict, metric: str, split: str, num_attention: int, cache: dict
) -> list[str]:
  """The figures of report.md: learning curves, scores per source length and the heatmaps of the first
  `num_attention` sentences (--num_attention_sentences)."""
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
  pngs, skipped = attention_figures(fig_dir, firsts, split, num_attention, cache)
  data, _ = report_runs.split_data(next(iter(firsts.values())), split, cache)
  lines += (
    [f"### Attention: the first {split} sentences, decoded by the best checkpoint of each variant's first seed", '']
    + [
      f'{i + 1}. source `{data.sources[i]}`, reference `{data.targets[i]}`'
      for i in range(min(num_attention, len(data)))
    ]
    + ['']
  )
  for variant, files in pngs.items():
    lines += [f'#### {variant}', '', *(f'![attention {variant} {i + 1}](figures/{f})' for i, f in enumerate(files)), '']
  if skipped:
    lines += [f'No attention in {", ".join(skipped)} (model.attention none_init / none_concat): no heatmaps.', '']
  return lines
