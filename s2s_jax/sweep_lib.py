"""Building blocks of sweep files (`experiments/sweeps/*.py`): lists of dotted config overrides.

def get_sweep(arg=None):
  return sweep_lib.product(sweep_lib.axis('model.attention', ['bahdanau', 'none_concat']),
                           sweep_lib.seeds(3))
"""

import itertools
import re
from typing import Any

Point = dict[str, Any]


def axis(key: str, values) -> list[Point]:
  """One swept field: [{key: v} for v in values]."""
  return [{key: v} for v in values]


def points(*dicts: Point) -> list[Point]:
  """Explicit points, e.g. variants that set several fields together."""
  return [dict(d) for d in dicts]


def product(*sweeps: list[Point]) -> list[Point]:
  """Every combination of the given sweeps (later ones vary fastest)."""
  out = []
  for combo in itertools.product(*sweeps):
    point = {}
    for part in combo:
      point.update(part)
    out.append(point)
  return out


def zip_(*sweeps: list[Point]) -> list[Point]:
  """Points taken together position by position (all sweeps must have the same length)."""
  if len({len(s) for s in sweeps}) > 1:
    raise ValueError(f'zip_ needs sweeps of equal length, got {[len(s) for s in sweeps]}.')
  return [dict(itertools.chain.from_iterable(p.items() for p in combo)) for combo in zip(*sweeps)]


def seeds(n: int, start: int = 0) -> list[Point]:
  """Seeds as a sweep axis (separate runs); for one vmapped run of n seeds set num_seeds instead."""
  return axis('seed', range(start, start + n))


def _short(value: Any) -> str:
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return re.sub(r'[^A-Za-z0-9_.+-]', '-', str(value))


def varying_keys(sweep: list[Point]) -> list[str]:
  """Keys whose value differs between points (in first-seen order): what names and reports show."""
  keys = list(dict.fromkeys(k for p in sweep for k in p))
  return [k for k in keys if len({repr(p.get(k)) for p in sweep}) > 1]


def run_name(point: Point, keys: list[str] | None = None) -> str:
  """A readable, filesystem-safe directory name: 'attention=luong,attention_score=dot,seed=1' (only `keys`)."""
  keys = list(point) if keys is None else keys
  return ','.join(f'{key.rpartition(".")[2]}={_short(point[key])}' for key in keys if key in point) or 'base'


def override_flags(point: Point) -> list[str]:
  """`--config.a.b=v` flags of a point."""
  return [f'--config.{key}={_short(value) if isinstance(value, bool) else value}' for key, value in point.items()]
