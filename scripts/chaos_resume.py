"""Checks that training survives SIGKILLs at random moments: the resumed run must equal an uninterrupted one.

  python scripts/chaos_resume.py --config=experiments/default.py:size=tiny --kills=3

Runs the config once to the end (A), then again (B) with --kills SIGKILLs at random moments, each followed by a
restart with the same command, and a final restart that runs to the end. Then compares A and B: the final
parameters must be bitwise identical (on CPU) and metrics.jsonl must hold the same records in the same order except
timing fields (wall_s, decode_s, *_per_s). Prints IDENTICAL and exits 0, or names the first difference and exits 1.
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

_CONFIG = flags.DEFINE_string('config', None, 'Experiment file and arg, e.g. experiments/default.py:size=tiny.')
_KILLS = flags.DEFINE_integer('kills', 3, 'SIGKILLs during the interrupted run.')
_ROOT = flags.DEFINE_string('root', None, 'Where the two workdirs go (default: a new temporary directory).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the kill moments.')
_OVERRIDES = flags.DEFINE_multi_string('override', [], 'Extra flags for s2s_jax.main, e.g. --config.seed=1.')
flags.mark_flag_as_required('config')

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(workdir: str, data_dir: str) -> list[str]:
  return [sys.executable, '-m', 's2s_jax.main', f'--config={_CONFIG.value}', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', *_OVERRIDES.value]


def _run(cmd: list[str], log_path: str, kill_after: float | None = None) -> tuple[int, float, bool]:
  """Runs cmd (appending output to log_path); SIGKILLs it after kill_after seconds if still running."""
  start = time.time()
  with open(log_path, 'a', encoding='utf-8') as log:
    proc = subprocess.Popen(cmd, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
      proc.wait(timeout=kill_after)
      killed = False
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      killed = True
  return proc.returncode, time.time() - start, killed


def _training_window(workdir: str, duration: float) -> tuple[float, float]:
  """Seconds after process start during which run A trained (from metrics.jsonl wall_s), so kills hit training."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  walls = [r['wall_s'] for r in records if 'train/loss' in r]
  offset = max(0.0, duration - max(r['wall_s'] for r in records))  # imports before train_and_evaluate starts
  gap = (walls[-1] - walls[0]) / max(len(walls) - 1, 1)
  return offset + max(0.0, walls[0] - gap), offset + walls[-1]


def _is_timing(key: str) -> bool:
  return key in ('wall_s',) or key.endswith('_per_s') or key.endswith('decode_s')


def _records(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [{k: v for k, v in json.loads(line).items() if not _is_timing(k)} for line in f]


def first_difference(a: str, b: str) -> str | None:
  """None if the runs match, else a description of the first difference."""
  from s2s_jax import checkpointing  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  for name in ('DONE', 'eval_test.json'):
    if os.path.exists(os.path.join(a, name)) != os.path.exists(os.path.join(b, name)):
      return f'{name} exists in only one of the runs'
  params_a, step_a = checkpointing.restore_params(a, 'latest')
  params_b, step_b = checkpointing.restore_params(b, 'latest')
  if step_a != step_b:
    return f'final checkpoint steps differ: {step_a} vs {step_b}'
  leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(params_a), jax.tree_util.tree_leaves_with_path(params_b)
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    if not np.array_equal(np.asarray(x), np.asarray(y)):
      return f'parameter {jax.tree_util.keystr(path)} differs (max |a-b| = {np.abs(np.asarray(x) - y).max():.3g})'
  rec_a, rec_b = _records(a), _records(b)
  for i, (x, y) in enumerate(zip(rec_a, rec_b)):
    if x != y:
      key = next((k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)), '?')
      return f'metrics.jsonl record {i} (step {x.get("step")}) differs at {key}: {x.get(key)} vs {y.get(key)}'
  if len(rec_a) != len(rec_b):
    return f'metrics.jsonl has {len(rec_a)} records uninterrupted and {len(rec_b)} after kills'
  return None


def main(argv):
  logging.set_verbosity(logging.ERROR)  # the comparison restores checkpoints; orbax logs every step of it
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  root = _ROOT.value or tempfile.mkdtemp(prefix='chaos_resume_')
  os.makedirs(root, exist_ok=True)
  data_dir, a, b = (os.path.join(root, x) for x in ('data', 'uninterrupted', 'killed'))
  if os.path.exists(a) or os.path.exists(b):
    raise app.UsageError(f'{root} already holds runs; give a new --root.')
  log = os.path.join(root, 'log.txt')
  code, duration, _ = _run(_command(a, data_dir), log)
  if code:
    print(f'The uninterrupted run failed (exit {code}); see {log}')
    sys.exit(1)
  start, end = _training_window(a, duration)
  print(f'uninterrupted run: {duration:.1f} s, training between {start:.1f} and {end:.1f} s')
  rng = random.Random(_SEED.value)
  for i in range(_KILLS.value):
    delay = rng.uniform(start, end)
    code, seconds, killed = _run(_command(b, data_dir), log, kill_after=delay)
    print(f'interrupted run {i + 1}: {"SIGKILL" if killed else f"finished (exit {code})"} after {seconds:.1f} s')
  code, seconds, _ = _run(_command(b, data_dir), log)
  print(f'final restart: exit {code} after {seconds:.1f} s')
  difference = 'the final restart failed' if code else first_difference(a, b)
  if difference:
    print(f'DIFFERENT: {difference} (workdirs in {root})')
    sys.exit(1)
  print('IDENTICAL')


if __name__ == '__main__':
  app.run(main)
