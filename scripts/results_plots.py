"""The plots of the results registry, drawn from the records in results/ by `results_table.py plots`.

  python scripts/results_table.py plots [--out=DIR]   # writes docs/speed_vs_pytorch.png, docs/results/*_curves.png

A speed record with a `plot` entry becomes a bar chart,
  "plot": {"file": "docs/speed_vs_pytorch.png", "x": COLUMN, "bars": [COLUMN, ...], "ylabel": "...",
           "title": "..." (default: the record's), "annotate": COLUMN (a ratio written above each group)}
one group of bars per row (labelled by its `x` cell), one bar per column of `bars`. The result records of each
results page that carry a validation curve with wall times become one learning-curve plot per page beside it
(docs/results/NAME.md -> docs/results/NAME_curves.png): the validation metric against wall time, a line per record.
A record whose curve lacks wall times (one published before the registry) is skipped with a note; a page left with
no curve gets no plot. Files go under DIR (default: the repository), PNG of at most 150 KB each.
"""

import os
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position  # noqa: E402

MAX_BYTES = 150_000


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=100, metadata={'Software': None})  # no version stamp: the same records, the same bytes
  plt.close(fig)
  if (size := os.path.getsize(path)) > MAX_BYTES:
    raise ValueError(f'{path} is {size:,} bytes, over the {MAX_BYTES:,} allowed: draw a smaller figure.')
  return path


def bar_chart(rec: dict[str, Any], out: str) -> str:
  """The bar chart of a speed record's `plot` entry, written under `out`; returns its path."""
  spec = rec['plot']
  bars, x, note = spec.get('bars') or [], spec.get('x'), spec.get('annotate')
  if not spec.get('file', '').endswith('.png') or not bars or not x:
    raise ValueError(f'{rec["name"]}: its "plot" needs "file" (a .png), "x" and "bars"')
  if unknown := [c for c in [x, *bars] + ([note] if note else []) if c not in rec['columns']]:
    raise ValueError(f'{rec["name"]}: "plot" names {", ".join(unknown)}, not among its columns {rec["columns"]}')
  rows = rec['rows']
  fig, ax = plt.subplots(figsize=(7.5, 3.6))
  width = 0.8 / len(bars)
  for i, column in enumerate(bars):
    offsets = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(rows))]
    drawn = ax.bar(offsets, [row.get(column) or 0 for row in rows], width, label=column)
    ax.bar_label(drawn, fmt='{:,.0f}', fontsize=8)
  if note:
    top = max(row.get(c) or 0 for row in rows for c in bars)
    for j, row in enumerate(rows):
      if row.get(note) is not None:
        ax.annotate(f'{row[note]:.2f}x', (j, top * 1.08), ha='center', fontsize=9, fontweight='bold')
  ax.set_ylim(0, max(row.get(c) or 0 for row in rows for c in bars) * 1.4)  # room for the ratios and the legend
  ax.set_xticks(range(len(rows)), [str(row.get(x)) for row in rows])
  ax.set_ylabel(spec.get('ylabel', ''))
  title = f'{spec.get("title", rec["title"])}\n{rec["machine"]}, {rec["commit"]}, {rec["date"]}'
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8, loc='upper left', ncol=len(bars), framealpha=0.9)
  return _save(fig, os.path.join(out, spec['file']))


def curve_points(rec: dict[str, Any]) -> list[tuple[float, float]] | None:
  """(wall minutes, validation value) of a result record's curve; None where any point lacks its wall time."""
  curve = rec.get('curve') or []
  if not curve or any(wall is None or value is None for _, wall, value in curve):
    return None
  return [(wall / 60, value) for _, wall, value in curve]


def curve_plots(records: list[dict[str, Any]], out: str) -> tuple[list[str], list[str]]:
  """One learning-curve plot per results page; returns the files written and a note per record skipped."""
  written, notes = [], []
  results = [r for r in records if r['kind'] == 'result']
  for page in sorted({r['page'] for r in results}):
    lines = []
    for rec in (r for r in results if r['page'] == page):
      if (points := curve_points(rec)) is None:
        why = 'lacks wall times' if rec.get('curve') else 'is empty'
        notes.append(f'{rec["name"]}: no learning curve drawn (its validation curve {why}; source: {rec["source"]})')
      else:
        lines.append((rec, points))
    if not lines:
      continue
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for rec, points in lines:
      ax.plot(*zip(*points), marker='o', markersize=3, label=f'{rec["title"]} ({rec["commit"]}, {rec["date"]})')
    metrics = sorted({'validation ' + rec['metric'].split('/', 1)[-1] for rec, _ in lines})
    ax.set_xlabel('wall time (minutes, from the run start)')
    ax.set_ylabel(' / '.join(metrics))
    ax.set_title(f'{os.path.basename(page)}: validation against wall time', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, os.path.join(out, os.path.splitext(page)[0] + '_curves.png')))
  return written, notes


def write_plots(records: list[dict[str, Any]], out: str) -> tuple[list[str], list[str]]:
  """Every plot of the records under `out`: the files written and the notes on what was skipped."""
  written = [bar_chart(r, out) for r in records if r['kind'] == 'speed' and r.get('plot')]
  curves, notes = curve_plots(records, out)
  return written + curves, notes
