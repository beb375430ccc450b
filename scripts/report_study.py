"""The Optuna study of a scripts/tune.py root in a report (scripts/report.py): its trials, best trial, parameter
importances and optimization history. A library of scripts/report.py (no flags)."""

import os
import sys

import report_runs

from s2s_jax import redact


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

  info = report_runs.read(os.path.join(root, 'study.json'))
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
