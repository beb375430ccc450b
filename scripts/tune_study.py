"""What a study and a root of scripts/tune.py are bound to (one search each), and scripts/tune.py's study files:
ROOT/study.json and the grid sampler. A library of scripts/tune.py (no flags)."""

import json
import os

from absl import app
import optuna

from s2s_jax import fileio
from s2s_jax import redact

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SEARCH_KEYS = ('space', 'config', 'config_arg', 'metric', 'direction')  # what a study and a root are bound to


def space_key(spec: str) -> str:
  """--space as a study records it: the file relative to the repository when inside it (two checkouts agree), else
  its absolute path, with its arg."""
  path, sep, arg = spec.partition(':')
  full, repo = os.path.realpath(path if os.path.isabs(path) else os.path.join(_REPO, path)), os.path.realpath(_REPO)
  return (os.path.relpath(full, repo) if full.startswith(repo + os.sep) else full) + sep + arg


def search_of(module, spec: str) -> dict[str, str]:
  """What a study and a root are bound to: the search file with its arg, the base config, the metric, the direction."""
  return {
    'space': space_key(spec),
    'config': module.CONFIG,
    'config_arg': getattr(module, 'CONFIG_ARG', ''),
    'metric': module.METRIC,
    'direction': module.DIRECTION,
  }


def _differences(old: dict, new: dict) -> str:
  keys = [k for k in _SEARCH_KEYS if k in old and k in new and old[k] != new[k]]
  return ', '.join(f'{k} {old[k]!r} (this command: {new[k]!r})' for k in keys)


def read_root(root: str) -> dict | None:
  """ROOT/study.json, or None for a new root."""
  try:
    with open(os.path.join(root, 'study.json'), encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError as e:
    raise app.UsageError(f'{root}/study.json is not JSON ({e}); move it away or use another --root.') from None


def bind_root(root: str, search: dict, storage: str, study_name: str | None) -> str:
  """The study's name for this root (`study_name`: --study_name, if given); refuses a root that holds another search,
  another study or another storage."""
  info = read_root(root)
  if info is None:
    return study_name or f'{os.path.basename(root.rstrip("/")) or "study"}-{os.urandom(4).hex()}'
  if differences := _differences(dict(info, space=space_key(info.get('space', ''))), search):
    raise app.UsageError(
      f'--root={root} holds a search with {differences}; a root keeps one search: use another --root.'
    )
  if study_name and study_name != info.get('study_name'):
    raise app.UsageError(
      f'--root={root} belongs to study {info.get("study_name")!r}, not {study_name!r}: pass '
      f'--study_name={info.get("study_name")} or use another --root.'
    )
  if info.get('storage') not in (None, redact.url(storage)):
    raise app.UsageError(
      f'--root={root} belongs to study {info.get("study_name")!r} in {info["storage"]}, not in {redact.url(storage)}: '
      'give that --storage or use another --root.'
    )
  return info['study_name']


def bind_study(study: optuna.Study, search: dict, storage: str) -> None:
  """Records the search in a new study (user attribute 'search'); refuses a study of another search or direction.
  Two drivers creating the study at once both write and read back: the one whose search lost refuses."""
  direction = study.direction.name.lower()
  if direction != search['direction']:
    raise app.UsageError(
      f'Study {study.study_name!r} in {redact.url(storage)} was created to {direction} its objective, and this '
      f'search would {search["direction"]} {search["metric"]}: use another --study_name (or --root).'
    )
  if 'search' not in study.user_attrs:
    study.set_user_attr('search', search)
  stored = study.user_attrs['search']
  if differences := _differences(stored, search):
    raise app.UsageError(
      f'Study {study.study_name!r} holds a search with {differences}; a study keeps one search: use another '
      '--study_name (or --root).'
    )


def write_study_json(root: str, search: dict, storage: str, study_name: str) -> None:
  """ROOT/study.json, what scripts/report.py reads: the search and where its study is (the password hidden)."""
  fileio.write_json(
    os.path.join(root, 'study.json'),
    {**search, 'storage': redact.url(storage), 'study_name': study_name},
    indent=2,
  )


class GridSampler(optuna.samplers.GridSampler):
  """Optuna's grid sampler without its study.stop() once the grid is covered: outside Study.optimize that raises
  RuntimeError in the tell of the last grid point (the driver crashed there); --trials ends the search."""

  def after_trial(self, study, trial, state, values) -> None:
    del study, trial, state, values
