"""What the persistent compilation cache saves (issue 27's measurements), as A/Bs in one invocation.

  python scripts/benchmark_compile.py --case=default --root=/tmp/bc   # experiments/default.py, three runs
  python scripts/benchmark_compile.py --case=strong --root=/tmp/bc    # Multi30k strong: seconds to the first step
  python scripts/benchmark_compile.py --case=tune --root=/tmp/bc      # the 8-trial Bahdanau search, twice

default: a run with the cache off (the share of its wall time spent compiling), then two runs in new workdirs
sharing one new cache folder: the first from the empty cache, the second with another learning rate and seed.
strong: four starts stopped (SIGTERM, a checkpoint) right after their first training step: a warm-up that fills
the data caches, then cache off, empty cache, and the same cache with another learning rate; seconds from
process start to the end of the first step (its progress line) and what each start compiled.
tune: `scripts/tune.py --space=experiments/search/bahdanau.py --trials=8` with the cache off, then from an empty
cache: total wall time, each trial's parameters, value and compiles (from its provenance.json).
Take it on an idle machine (CONVENTIONS §7). `--json=FILE` writes the numbers.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

_CASE = flags.DEFINE_enum('case', 'default', ['default', 'strong', 'tune'], 'Which measurement.')
_ROOT = flags.DEFINE_string('root', None, 'A new folder for the workdirs and cache folders.', required=True)
_TRIALS = flags.DEFINE_integer('trials', 8, 'tune: trials per search.')
_JSON = flags.DEFINE_string('json', None, 'Also write the results to this JSON file.')

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MAIN = [sys.executable, '-m', 's2s_jax.main']


def _compiles(workdir: str) -> dict:
  """The compile statistics of the workdir's last start (provenance.json)."""
  with open(os.path.join(workdir, 'provenance.json'), encoding='utf-8') as f:
    return json.load(f)['starts'][-1].get('compiles') or {}


def _test_score(workdir: str, name: str) -> float | None:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    values = [r[name] for r in map(json.loads, f) if name in r]
  return values[-1] if values else None


def _run(cmd: list[str], log: str) -> float:
  t0 = time.time()
  with open(log, 'w', encoding='utf-8') as out:
    subprocess.run(cmd, cwd=_REPO, stdout=out, stderr=subprocess.STDOUT, check=True)
  return time.time() - t0


def _row(label: str, **values) -> dict:
  print(label.ljust(34), '  '.join(f'{k}={v}' for k, v in values.items()), flush=True)
  return dict(label=label, **values)


def case_default(root: str) -> list[dict]:
  cache = os.path.join(root, 'cache')
  runs = [
    ('cache off', [], ''),
    ('empty cache', [], cache),
    ('same cache, lr 2e-3, seed 1', ['--config.optim.learning_rate=2e-3', '--config.seed=1'], cache),
  ]
  rows = []
  for k, (label, extra, cache_dir) in enumerate(runs):
    workdir = os.path.join(root, f'default_{k}')
    cmd = _MAIN + ['--config=experiments/default.py', f'--workdir={workdir}', f'--compilation_cache_dir={cache_dir}']
    wall = _run(cmd + extra, workdir + '.log')
    c = _compiles(workdir)
    rows.append(
      _row(
        label,
        wall_s=round(wall, 1),
        compile_s=c.get('compile_s'),
        compile_share=round(c.get('compile_s', 0) / wall, 3),
        compiled=c.get('compiled'),
        from_cache=c.get('from_cache'),
        test_exact_match=_test_score(workdir, 'test/exact_match'),
      )
    )
  rows.append(_row('ratio second / first (cached)', wall=round(rows[2]['wall_s'] / rows[1]['wall_s'], 3)))
  return rows


_FIRST_STEP = re.compile(r'\] step 1/\d+ ')


def _first_step(workdir: str, cache_dir: str, extra: list[str]) -> dict:
  """Starts strong.py, stops it (SIGTERM) once its first step is logged; seconds from process start to that line."""
  cmd = _MAIN + [
    '--config=experiments/multi30k/strong.py',
    f'--workdir={workdir}',
    f'--compilation_cache_dir={cache_dir}',
    '--config.log_every_steps=1',
  ]
  t0 = time.time()
  with open(workdir + '.log', 'w', encoding='utf-8') as log:
    proc = subprocess.Popen(cmd + extra, cwd=_REPO, stderr=subprocess.PIPE, stdout=log, text=True)
    first = None
    for line in proc.stderr:
      log.write(line)
      if first is None and _FIRST_STEP.search(line):
        first = time.time() - t0
        proc.send_signal(signal.SIGTERM)
    proc.wait()
  if first is None:
    raise RuntimeError(f'{workdir}: no first step logged; see {workdir}.log')
  c = _compiles(workdir)
  return dict(
    first_step_s=round(first, 1),
    compile_s=c.get('compile_s'),
    compiled=c.get('compiled'),
    from_cache=c.get('from_cache'),
  )


def case_strong(root: str) -> list[dict]:
  cache = os.path.join(root, 'cache')
  _first_step(os.path.join(root, 'strong_warmup'), '', [])  # data caches filled: every start below reads them
  return [
    _row('cache off', **_first_step(os.path.join(root, 'strong_off'), '', [])),
    _row('empty cache', **_first_step(os.path.join(root, 'strong_cold'), cache, [])),
    _row(
      'same cache, lr 1e-3',
      **_first_step(os.path.join(root, 'strong_warm'), cache, ['--config.optim.learning_rate=1e-3']),
    ),
  ]


def _search(root: str, cache_dir: str) -> dict:
  import optuna  # pylint: disable=g-import-not-at-top

  cmd = [
    sys.executable,
    'scripts/tune.py',
    '--space=experiments/search/bahdanau.py',
    f'--root={root}',
    f'--trials={_TRIALS.value}',
    f'--compilation_cache_dir={cache_dir}',
  ]
  wall = _run(cmd, root + '.log')
  with open(os.path.join(root, 'study.json'), encoding='utf-8') as f:
    name = json.load(f)['study_name']
  study = optuna.load_study(study_name=name, storage=f'sqlite:///{os.path.join(root, "study.db")}')
  trials = []
  for t in sorted(study.trials, key=lambda t: t.number):
    c = _compiles(os.path.join(root, f'trial_{t.number}'))
    trials.append(
      dict(
        number=t.number,
        params=t.params,
        state=t.state.name,
        value=t.value,
        compiled=c.get('compiled'),
        from_cache=c.get('from_cache'),
        compile_s=c.get('compile_s'),
      )
    )
  return dict(wall_s=round(wall, 1), trials=trials)


def case_tune(root: str) -> list[dict]:
  off = _search(os.path.join(root, 'tune_off'), '')
  cold = _search(os.path.join(root, 'tune_cache'), os.path.join(root, 'cache'))
  rows = []
  for label, s in (('cache off', off), ('empty cache', cold)):
    rows.append(
      _row(
        label,
        wall_s=s['wall_s'],
        compiled=sum(t['compiled'] or 0 for t in s['trials']),
        from_cache=sum(t['from_cache'] or 0 for t in s['trials']),
        compile_s=round(sum(t['compile_s'] or 0 for t in s['trials']), 1),
      )
    )
    for t in s['trials']:
      print('   ', json.dumps(t, sort_keys=True))
  same = [a['params'] == b['params'] and a['value'] == b['value'] for a, b in zip(off['trials'], cold['trials'])]
  rows.append(
    _row(
      'empty cache / off', wall=round(cold['wall_s'] / off['wall_s'], 3), identical_trials=f'{sum(same)}/{len(same)}'
    )
  )
  rows.append(dict(label='searches', off=off, cache=cold))
  return rows


def main(argv):
  del argv
  root = os.path.abspath(_ROOT.value)
  if os.path.exists(root) and os.listdir(root):
    raise app.UsageError(f'--root={root} is not empty: give a new folder.')
  os.makedirs(root, exist_ok=True)
  rows = {'default': case_default, 'strong': case_strong, 'tune': case_tune}[_CASE.value](root)
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(dict(case=_CASE.value, rows=rows), f, indent=1)


if __name__ == '__main__':
  app.run(main)
