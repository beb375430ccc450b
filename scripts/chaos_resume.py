"""Checks that a run survives SIGKILLs at the worst moments: the resumed run must equal an uninterrupted one.

  python scripts/chaos_resume.py --config=experiments/default.py:size=tiny --override=--config.num_train_steps=200 \
      --override=--config.eval_every_steps=40 --override=--config.checkpoint_every_steps=40 \
      --kill_at=prepare,random,eval,save,test

Runs the config once to the end (A), then again (B) killed once per window of --kill_at, each kill followed by a
restart with the same command, and a final restart that runs to the end. Windows, each found by the log line that
opens it (the kill comes --kill_delay seconds after that line, --eval_kill_delay for eval):
  prepare  inside data preparation ("Preparing ..."; B prepares its own copy of the data, in ROOT/data_killed)
  eval     inside a validation ("Validating step N.")
  save     inside a checkpoint save ("Saving checkpoint N.")
  test     inside the final test evaluation ("Testing the best checkpoint ...")
  random   at a random moment of training (after a training log line, within the time A takes to the next; --seed)
A window that a run never reaches is an error. Then A and B are compared: the final parameters must be bitwise
identical (on CPU), so must `best/` (its step and parameters) and `eval_test.json` (timing fields aside), and
metrics.jsonl must hold the same records in the same order except timing fields (wall_s, decode_s, *_per_s). Prints
IDENTICAL and exits 0, or names the first difference and exits 1. `--kills=N` adds N kills at moments drawn from
A's training time (a run that finishes first is not an error there).
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

_CONFIG = flags.DEFINE_string('config', None, 'Experiment file and arg, e.g. experiments/default.py:size=tiny.')
_KILL_AT = flags.DEFINE_list(
  'kill_at',
  ['prepare', 'random', 'eval', 'save', 'test'],
  'Windows to kill the run in, in this order (see the module docstring).',
)
_KILL_DELAY = flags.DEFINE_float('kill_delay', 0.2, 'Seconds from the log line that opens a window to the kill.')
_EVAL_KILL_DELAY = flags.DEFINE_float(
  'eval_kill_delay',
  1.5,
  'The same for the eval window: late enough that a checkpoint saved just before the '
  'validation (the order before issue 15) has committed, which is what made a restart skip the validation; measured '
  'on 4dacba5^: DIFFERENT (best step 20 vs 40) at 1.5 s, IDENTICAL at 0.2 s.',
)
_KILLS = flags.DEFINE_integer('kills', 0, 'More SIGKILLs at random moments of training, after the windows.')
_ROOT = flags.DEFINE_string('root', None, 'Where the two workdirs go (default: a new temporary directory).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the kill moments.')
_OVERRIDES = flags.DEFINE_multi_string('override', [], 'Extra flags for s2s_jax.main, e.g. --config.seed=1.')
flags.mark_flag_as_required('config')

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_MARKERS = {
  'prepare': 'Preparing ',
  'eval': 'Validating step ',
  'save': 'Saving checkpoint ',
  'test': 'Testing the best checkpoint',
}


def _command(workdir: str, data_dir: str) -> list[str]:
  return [
    sys.executable,
    '-m',
    's2s_jax.main',
    f'--config={_CONFIG.value}',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
    *_OVERRIDES.value,
  ]


def _run(
  cmd: list[str], log_path: str, kill_after: float | None = None, marker: str | None = None, delay: float = 0.0
) -> tuple[int, float, bool]:
  """Runs cmd (appending its output to log_path). SIGKILLs it `kill_after` seconds after its start, or `delay`
  seconds after it prints a line containing `marker`, if it is still running then. Returns (exit code, seconds,
  whether it was killed)."""
  start = time.time()
  killed = threading.Event()

  def kill():
    if proc.poll() is None:
      killed.set()
      proc.send_signal(signal.SIGKILL)

  with open(log_path, 'a', encoding='utf-8') as log:
    proc = subprocess.Popen(cmd, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timers = [threading.Timer(kill_after, kill)] if kill_after is not None else []
    for t in timers:
      t.start()
    for line in proc.stdout:
      log.write(line)
      if marker and marker in line and not timers:
        log.write(f'[chaos_resume] killing {delay} s after this line\n')
        timers.append(threading.Timer(delay, kill))
        timers[-1].start()
    proc.wait()
    for t in timers:
      t.cancel()
  return proc.returncode, time.time() - start, killed.is_set()


def _training_window(workdir: str, duration: float) -> tuple[float, float, float]:
  """Seconds after process start during which run A trained (from metrics.jsonl wall_s), so kills hit training,
  and the seconds between two of its training logs."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    records = [json.loads(line) for line in f]
  walls = [r['wall_s'] for r in records if 'train/loss' in r]
  offset = max(0.0, duration - max(r['wall_s'] for r in records))  # imports before train_and_evaluate starts
  gap = (walls[-1] - walls[0]) / max(len(walls) - 1, 1)
  return offset + max(0.0, walls[0] - gap), offset + walls[-1], gap


def _is_timing(key: str) -> bool:
  return key in ('wall_s',) or key.endswith('_per_s') or key.endswith('decode_s')


def _records(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [{k: v for k, v in json.loads(line).items() if not _is_timing(k)} for line in f]


def _params_difference(a: str, b: str, which: str) -> str | None:
  import jax  # pylint: disable=g-import-not-at-top

  from s2s_jax import checkpointing  # pylint: disable=g-import-not-at-top

  params_a, step_a = checkpointing.restore_params(a, which)
  params_b, step_b = checkpointing.restore_params(b, which)
  if step_a != step_b:
    return f'{which} checkpoint steps differ: {step_a} vs {step_b}'
  leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(params_a), jax.tree_util.tree_leaves_with_path(params_b)
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    if not np.array_equal(np.asarray(x), np.asarray(y)):
      return (
        f'{which} parameter {jax.tree_util.keystr(path)} differs (max |a-b| = {np.abs(np.asarray(x) - y).max():.3g})'
      )
  return None


def first_difference(a: str, b: str) -> str | None:
  """None if the runs match, else a description of the first difference."""
  for name in ('DONE', 'eval_test.json'):
    if os.path.exists(os.path.join(a, name)) != os.path.exists(os.path.join(b, name)):
      return f'{name} exists in only one of the runs'
  for which in ('latest', 'best'):
    if difference := _params_difference(a, b, which):
      return difference
  if os.path.exists(os.path.join(a, 'eval_test.json')):
    tests = []
    for workdir in (a, b):
      with open(os.path.join(workdir, 'eval_test.json'), encoding='utf-8') as f:
        tests.append({k: v for k, v in json.load(f).items() if not _is_timing(k)})
    if tests[0] != tests[1]:
      key = next(k for k in sorted(set(tests[0]) | set(tests[1])) if tests[0].get(k) != tests[1].get(k))
      return f'eval_test.json differs at {key}: {tests[0].get(key)} vs {tests[1].get(key)}'
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
  if unknown := set(_KILL_AT.value) - set(_MARKERS) - {'random'}:
    raise app.UsageError(f'--kill_at: unknown windows {sorted(unknown)}; choose from {sorted(_MARKERS)} and random.')
  root = _ROOT.value or tempfile.mkdtemp(prefix='chaos_resume_')
  os.makedirs(root, exist_ok=True)
  a, b = (os.path.join(root, x) for x in ('uninterrupted', 'killed'))
  if os.path.exists(a) or os.path.exists(b):
    raise app.UsageError(f'{root} already holds runs; give a new --root.')
  log = os.path.join(root, 'log.txt')
  code, duration, _ = _run(_command(a, os.path.join(root, 'data')), log)
  if code:
    print(f'The uninterrupted run failed (exit {code}); see {log}')
    sys.exit(1)
  start, end, gap = _training_window(a, duration)
  print(f'uninterrupted run: {duration:.1f} s, training between {start:.1f} and {end:.1f} s')
  rng = random.Random(_SEED.value)
  cmd_b = _command(b, os.path.join(root, 'data_killed'))
  for window in _KILL_AT.value:
    if window == 'random':  # a random moment between two training logs (a restarted run resumes mid-way)
      code, seconds, killed = _run(cmd_b, log, marker='] train/', delay=rng.uniform(0.0, 0.9 * gap))
    else:
      delay = _EVAL_KILL_DELAY.value if window == 'eval' else _KILL_DELAY.value
      code, seconds, killed = _run(cmd_b, log, marker=_MARKERS[window], delay=delay)
    print(
      f'kill in {window}: {"SIGKILL" if killed else f"not killed, finished (exit {code})"} after {seconds:.1f} s',
      flush=True,
    )
    if not killed:
      print(f'DIFFERENT: the run never reached the {window} window, or ended within it (see {log})')
      sys.exit(1)
  for i in range(_KILLS.value):  # more kills at moments drawn from run A's training time
    code, seconds, killed = _run(cmd_b, log, kill_after=rng.uniform(start, end))
    print(
      f'random kill {i + 1}: {"SIGKILL" if killed else f"not killed, finished (exit {code})"} after {seconds:.1f} s',
      flush=True,
    )
  code, seconds, _ = _run(cmd_b, log)
  print(f'final restart: exit {code} after {seconds:.1f} s')
  difference = 'the final restart failed' if code else first_difference(a, b)
  if difference:
    print(f'DIFFERENT: {difference} (workdirs in {root})')
    sys.exit(1)
  print('IDENTICAL')


if __name__ == '__main__':
  app.run(main)
