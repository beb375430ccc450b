"""The runs of a report (scripts/report.py): the run directories of a root, their files and a row of results.csv per
run, and the prepared data of a split. A library of scripts/report.py (no flags)."""

import functools
import glob
import json
import math
import os
import re
import sys

from absl import app
import numpy as np

from s2s_jax import config_lib
from s2s_jax.data import raw_files

_FIRST = ('exact_match', 'bleu', 'bleu_lc', 'bleu_tok', 'chrf', 'rougeL', 'wer', 'cer', 'loss', 'perplexity')
TIMING = ('decode_s', 'sentences_per_s')


def read_lines(path: str) -> list[str] | None:
  """The lines of a text file as every reader of the project splits them (at \\n only), or None when it does not
  exist: a hypothesis containing U+2028 or a form feed stays one line, aligned with its reference."""
  return raw_files.read_lines(path) if os.path.exists(path) else None


def read(path: str, parse=json.loads):
  """parse(text of the file), or None when it does not exist."""
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      return parse(f.read())
  return None


def best_step(workdir: str) -> int | None:
  best = os.path.join(workdir, 'best')
  steps = [int(d) for d in os.listdir(best) if d.isdigit()] if os.path.isdir(best) else []
  return max(steps) if steps else None


def own_eval(run: dict, split: str) -> tuple[dict | None, str | None]:
  """(eval_<split>.json of the run, the path of its eval_<split>.hyp.txt) when they are the training's own test
  evaluation, else (None, None) with a warning (once per run): an `evaluate` with other settings written under that
  name (`--name=<split>`; its `tag` names the difference), or an older file scoring another step than best/'s."""
  return _own_eval(run['workdir'], run['name'], split)


@functools.cache
def _own_eval(workdir: str, name: str, split: str) -> tuple[dict | None, str | None]:
  path = os.path.join(workdir, f'eval_{split}.json')
  result = read(path)
  if result is None:
    return None, None
  best, why = best_step(workdir), None
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
    for item in (read(os.path.join(folder, 'provenance.json')) or {}).get('command_line', []):
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
      own = read(os.path.join(workdir, 'config.json'))
      if (raw := own or read(os.path.join(parent, 'config.json'))) is None:
        continue
      config, lines = config_lib.flatten(raw), read_lines(os.path.join(workdir, 'metrics.jsonl')) or []
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
  best = best_step(run['workdir'])
  row.update(train_s=train[-1]['wall_s'] if train else '', best_step='' if best is None else best)
  return {**row, **_last(run['records'], 'eval', best), **_last(run['records'], test_prefix)}


def metric_columns(rows: list[dict], test_prefix: str) -> list[str]:
  def order(col):
    name = col.partition('/')[2]
    return (name in TIMING, _FIRST.index(name) if name in _FIRST else len(_FIRST), name)

  return [
    c
    for prefix in ('eval', test_prefix)
    for c in sorted({k for r in rows for k in r if k.startswith(prefix + '/')}, key=order)
  ]


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
