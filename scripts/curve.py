"""A run's quality against its wall time: validation scores at every evaluation, test scores of its saved
checkpoints, and its resumes marked. For long runs that are stopped and resumed (Multi30k `strong`).

  python scripts/curve.py --workdir=DIR --out=docs/m30k_strong_curve.png [--metrics=bleu_lc,bleu_tok] \
      [--evaluate_checkpoints]

x is metrics.jsonl's `wall_s` in hours: the run's own time over all its starts (a resumed run goes on from the
largest wall_s it had recorded; the time between starts is not counted). Each start after the first (provenance.json's
`starts`) is a dashed vertical line at the wall time of the step it resumed from. Test points are every
DIR/eval_*.json of the split (`--split`) with a `checkpoint_step`: eval_test.json of the run's end, and
eval_<split>_step_<N>.json, which `--evaluate_checkpoints` writes for every step kept in DIR/checkpoints/ that
has none yet (`python -m s2s_jax.evaluate --split=test --checkpoint=N`, decoding as the run's config says; run the
run with a larger `--config.keep_checkpoints` to keep every evaluated step). Each sits at the wall time of the
validation record of its step. Prints the numbers as a markdown table.
"""

import glob
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run directory written by s2s_jax.main.')
_OUT = flags.DEFINE_string('out', None, 'The PNG to write (default: DIR/curve.png).')
_METRICS = flags.DEFINE_list('metrics', ['bleu_lc'], 'Scores to plot (names without the eval/ prefix).')
_SPLIT = flags.DEFINE_string('split', 'test', 'The split of the test points.')
_EVALUATE = flags.DEFINE_bool(
  'evaluate_checkpoints', False, 'Score every kept checkpoint without an eval_<split>_step_<N>.json first.'
)
_TITLE = flags.DEFINE_string('title', None, 'Figure title (default: the workdir name).')
flags.mark_flag_as_required('workdir')

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_records(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def read_starts(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'provenance.json'), encoding='utf-8') as f:
    return json.load(f).get('starts') or []


def _wall_at(records: list[dict], step: int) -> float | None:
  """The wall time (s) of the validation record at `step`, else of the latest record at or before it."""
  evals = [r['wall_s'] for r in records if r['step'] == step and any(k.startswith('eval/') for k in r)]
  if evals:
    return evals[-1]
  earlier = [r['wall_s'] for r in records if r['step'] <= step]
  return earlier[-1] if earlier else None


def test_points(workdir: str, split: str, records: list[dict]) -> list[dict]:
  """{step, wall_s, name, <scores>} of every eval_<split>*.json with a checkpoint_step, by step (for one step,
  eval_<split>.json of the run's end comes last and wins)."""
  points = {}
  paths = sorted(glob.glob(os.path.join(workdir, f'eval_{split}_step_*.json')))
  paths += [os.path.join(workdir, f'eval_{split}.json')]
  for path in paths:
    if not os.path.exists(path):
      continue
    with open(path, encoding='utf-8') as f:
      result = json.load(f)
    step = result.get('checkpoint_step')
    if not isinstance(step, int):
      continue
    points[step] = {**result, 'step': step, 'wall_s': _wall_at(records, step), 'name': os.path.basename(path)}
  return [points[s] for s in sorted(points)]


def evaluate_checkpoints(workdir: str, split: str) -> None:
  folder = os.path.join(workdir, 'checkpoints')
  kept = sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []
  for step in kept:
    name = f'{split}_step_{step}'
    if os.path.exists(os.path.join(workdir, f'eval_{name}.json')):
      continue
    print(f'[curve] scoring checkpoint {step} on {split}', file=sys.stderr, flush=True)
    path = os.pathsep.join(filter(None, [_REPO, os.environ.get('PYTHONPATH')]))
    subprocess.run(
      [
        sys.executable,
        '-m',
        's2s_jax.evaluate',
        f'--workdir={workdir}',
        f'--split={split}',
        f'--checkpoint={step}',
        f'--name={name}',
      ],
      check=True,
      stdout=subprocess.DEVNULL,
      env={**os.environ, 'PYTHONPATH': path},
    )


def table(records: list[dict], tests: list[dict], metrics: list[str], split: str) -> list[str]:
  by_step = {r['step']: r for r in records if any(f'eval/{m}' in r for m in metrics)}
  tests_by_step = {t['step']: t for t in tests}
  head = ['step', 'wall h', *[f'val {m}' for m in metrics], *[f'{split} {m}' for m in metrics]]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---:|' * len(head)]
  for step in sorted(set(by_step) | set(tests_by_step)):
    val, test = by_step.get(step, {}), tests_by_step.get(step, {})
    wall = val.get('wall_s', test.get('wall_s'))
    cells = [str(step), f'{wall / 3600:.2f}' if isinstance(wall, (int, float)) else '']
    cells += [f'{val[f"eval/{m}"]:.2f}' if isinstance(val.get(f'eval/{m}'), (int, float)) else '' for m in metrics]
    cells += [f'{test[m]:.2f}' if isinstance(test.get(m), (int, float)) else '' for m in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def plot(
  path: str, records: list[dict], tests: list[dict], starts: list[dict], metrics: list[str], split: str, title: str
) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  for m in metrics:
    vals = [(r['wall_s'] / 3600, r[f'eval/{m}']) for r in records if isinstance(r.get(f'eval/{m}'), (int, float))]
    if vals:
      (line,) = ax.plot(*zip(*vals), marker='.', label=f'validation {m}')
      pts = [(t['wall_s'] / 3600, t[m]) for t in tests if isinstance(t.get(m), (int, float)) and t['wall_s']]
      if pts:
        ax.plot(*zip(*pts), marker='s', linestyle=':', color=line.get_color(), label=f'{split} {m}')
  for k, start in enumerate(starts[1:]):
    wall = _wall_at(records, start['from_step'])
    if wall is not None:
      ax.axvline(
        wall / 3600,
        color='gray',
        linestyle='--',
        linewidth=0.8,
        label='resumed (from the step of the line)' if k == 0 else None,
      )
  steps = [(r['wall_s'] / 3600, r['step']) for r in records if any(k.startswith('eval/') for k in r)]
  if steps:
    top = ax.secondary_xaxis('top')
    shown = steps[:: max(1, len(steps) // 6)]
    top.set_xticks([w for w, _ in shown], labels=[str(s) for _, s in shown])
    top.set_xlabel('step')
  ax.set(xlabel='wall time of the run (hours)', ylabel='BLEU', title=title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  workdir = _WORKDIR.value
  if not os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
    raise app.UsageError(f'{workdir} has no metrics.jsonl: give the workdir of a run of s2s_jax.main.')
  records = read_records(workdir)
  known = {k[len('eval/') :] for r in records for k in r if k.startswith('eval/')}
  if unknown := [m for m in _METRICS.value if m not in known]:
    raise app.UsageError(f'--metrics names {unknown}, which the run never logged; it has {sorted(known)}.')
  if _EVALUATE.value:
    evaluate_checkpoints(workdir, _SPLIT.value)
  tests = test_points(workdir, _SPLIT.value, records)
  starts = read_starts(workdir)
  out = _OUT.value or os.path.join(workdir, 'curve.png')
  plot(out, records, tests, starts, _METRICS.value, _SPLIT.value, _TITLE.value or os.path.basename(workdir.rstrip('/')))
  print(f'{len(starts)} start(s), resumed {max(len(starts) - 1, 0)} time(s); figure: {out}')
  print('\n'.join(table(records, tests, _METRICS.value, _SPLIT.value)))


if __name__ == '__main__':
  app.run(main)
