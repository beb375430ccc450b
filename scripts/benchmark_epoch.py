"""`benchmark.py epoch`: one real epoch of a config's training and the evaluation it runs, per source tree (checkouts
of two commits), alternated; the time of each milestone read from the log of `python -m s2s_jax.main` in a fresh
process (see scripts/benchmark.py's docstring). A library of scripts/benchmark.py (no flags)."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import logging


def _epoch_length(report: dict) -> int:
  """Training batches per epoch from a run's data_report.json (also for the plans of earlier versions)."""
  if 'train_batches_per_epoch' in report:
    return report['train_batches_per_epoch']
  if 'train_buckets' in report:  # an earlier plan: every bucket padded its own last batch
    return sum(-(-b['examples'] // b['batch_size']) for b in report['train_buckets'])
  raise ValueError('epoch needs a bucketed config (data.num_buckets != 1 or data.batch_tokens > 0).')


def _run_main(tree: str, config_args: list[str], overrides: dict, workdir: str) -> dict:
  """One `python -m s2s_jax.main` of the source tree `tree` in a fresh process: seconds from its start to each
  milestone of its log, read as the lines arrive."""
  args = [
    sys.executable,
    '-m',
    's2s_jax.main',
    f'--workdir={workdir}',
    *config_args,
    *[f'--config.{k}={v}' for k, v in overrides.items()],
  ]
  with open(os.path.join(tree, 's2s_jax', 'config_lib.py'), encoding='utf-8') as f:
    if 'num_train_steps' in overrides and 'num_train_epochs' in f.read():  # trees before it have no such field
      args.append('--config.num_train_epochs=0')
  env = dict(os.environ, PYTHONPATH=tree)
  start = time.perf_counter()
  marks, compile_s, tail = {}, 0.0, []
  with subprocess.Popen(args, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
    for line in p.stderr:
      now = time.perf_counter() - start
      tail = (tail + [line])[-30:]
      if 'Training from step' in line:
        marks.setdefault('train_start', now)
      elif re.search(r'\] \[\d+\] train/', line):
        marks['train_end'] = now
      elif re.search(r'\] \[\d+\] eval/', line):
        marks['eval_end'] = now
      if m := re.search(r'Compiled the train step .* in ([0-9.]+) s', line):
        compile_s += float(m.group(1))
  if p.returncode:
    raise RuntimeError(f'{" ".join(args)} failed (exit {p.returncode}):\n' + ''.join(tail))
  marks['exit'] = time.perf_counter() - start
  marks['compile_s'] = compile_s if compile_s else None  # versions before lazy compiles do not log them
  return marks


def measure_epoch(config, config_args: list[str], trees: list[str], rounds: int) -> dict:
  """One real epoch of training and the evaluation the config runs after it, per source tree, alternated."""
  quiet = {
    'data.test_splits': '',
    'checkpoint_every_steps': 1,
    'log_every_steps': 1,
    'eval_every_steps': 1,
    'num_train_steps': 1,
    'eval.num_decode_examples': 1,
  }
  lengths, reports = {}, {}
  for tree in trees:  # the epoch length of each tree's own plan, from a one-step run's data_report.json
    workdir = tempfile.mkdtemp(prefix='s2s_epoch_')
    try:
      _run_main(tree, config_args, quiet, workdir)
      with open(os.path.join(workdir, 'data_report.json'), encoding='utf-8') as f:
        reports[tree] = json.load(f)
    finally:
      shutil.rmtree(workdir, ignore_errors=True)
    lengths[tree] = _epoch_length(reports[tree])
  runs = {tree: [] for tree in trees}
  for _ in range(rounds):
    for tree in trees:
      steps = lengths[tree]
      workdir = tempfile.mkdtemp(prefix='s2s_epoch_')
      try:
        overrides = {
          'data.test_splits': '',
          'num_train_steps': steps,
          'log_every_steps': steps,
          'checkpoint_every_steps': steps,
          'eval_every_steps': steps,
        }
        marks = _run_main(tree, config_args, overrides, workdir)
      finally:
        shutil.rmtree(workdir, ignore_errors=True)
      run = {
        'startup_s': marks['train_start'],
        'train_s': marks['train_end'] - marks['train_start'],
        'eval_s': marks['eval_end'] - marks['train_end'],
        'compile_s': marks['compile_s'],
      }
      run['epoch_s'] = run['train_s'] + run['eval_s']
      step_s = (run['train_s'] - (run['compile_s'] or 0.0)) / steps
      run['eval_share_at_config_cadence'] = run['eval_s'] / (run['eval_s'] + step_s * config.eval_every_steps)
      runs[tree].append(run)
      logging.info('%s: %s', tree, run)
  out = {}
  for tree in trees:
    report = reports[tree]
    med = lambda key, r=runs[tree]: statistics.median(x[key] for x in r) if r[0][key] is not None else None
    out[tree] = {
      'steps_per_epoch': lengths[tree],
      'runs': runs[tree],
      'padding_fraction': report['splits']['train']['padding_fraction'],
      'train_batch_shapes': len(report.get('train_buckets', [])),
      **{
        key: med(key)
        for key in ('epoch_s', 'train_s', 'eval_s', 'compile_s', 'startup_s', 'eval_share_at_config_cadence')
      },
    }
  return {
    'trees': out,
    'rounds': rounds,
    'eval_every_steps': config.eval_every_steps,
    'eval_num_decode_examples': config.eval.num_decode_examples,
  }
