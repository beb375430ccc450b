"""Launches every point of a sweep as its own run, through submitit (local processes here, SLURM on a cluster).

  python scripts/sweep.py --sweep=experiments/sweeps/attention_ablation.py:size=small --root=/tmp/ablation \
      [--executor=local|slurm] [--parallel=N] [--partition=P --time=MINUTES --gpus=G --cpus_per_task=C --mem=M
      --nodes=N --tasks_per_node=T]

`--sweep=FILE[:arg]` loads FILE's CONFIG and get_sweep(arg), and runs
`python -m s2s_jax.main --config=CONFIG[:arg] --workdir=ROOT/<run name> --config.k=v ...` for every point, where
the run name is made of the fields that vary across the sweep. Re-running skips runs with DONE and resumes
unfinished ones (SIGTERM from SLURM preemption checkpoints them). With --executor=slurm every point is one sbatch
job named after its run (see scripts/launch.py for the resources it asks for; --nodes/--tasks_per_node make every
run a multi-process one). A failed run is reported, with its job id and the last lines of its log, without stopping
the others; the exit status is 1 if any failed. A run stopped by a signal (Ctrl-C, preemption, a scheduler's time limit)
gets --stop_grace_s (600) seconds to checkpoint and exit before it is killed (scripts/launch.py) and is reported as
stopped (it counts as failed; run the command again to resume it); but a SLURM job that is requeued (`scontrol
requeue`, a preemption in REQUEUE mode) or still running after the signal (a warning: `scancel --signal=TERM`, the
time-limit warning) starts again and resumes its run, and the driver waits for it (docs/cluster.md). A sweep file
may also list EVALUATIONS (decode flags, e.g. beam sizes): each finished run's test split is then scored once per
entry (`eval_<name>.json`).
ROOT/sweep.json records the sweep for scripts/report.py. A ROOT another user owns, or that every user may write, is
refused.
"""

import importlib.util
import json
import os
import sys
import time

from absl import app
from absl import flags
import submitit

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
import launch  # pylint: disable=g-import-not-at-top,wrong-import-position

from s2s_jax import fileio  # pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import sweep_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import workdir_lock  # pylint: disable=g-import-not-at-top,wrong-import-position

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep file and optional arg: experiments/sweeps/NAME.py[:size=small].')
flags.mark_flags_as_required(['sweep', 'root'])


def load_sweep(spec: str) -> tuple[str, str, list[dict], list[dict]]:
  """(config file, config arg, points, evaluations) of 'FILE[:arg]'."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location(
    'sweep_module', os.path.join(_REPO, path) if not os.path.isabs(path) else path
  )
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  arg = arg or getattr(module, 'CONFIG_ARG', '')
  return module.CONFIG, arg, module.get_sweep(arg or None), getattr(module, 'EVALUATIONS', [])


def evaluation_name(flags_: dict) -> str:
  return '_'.join(f'{key}{sweep_lib.run_name({key: value}).partition("=")[2]}' for key, value in flags_.items())


def run_evaluations(root: str, runs: list[dict], evaluations: list[dict]) -> list[str]:
  """Scores every finished run's test split once per EVALUATIONS entry (decode flags); returns failures."""
  failed = []
  for run in runs:
    workdir = os.path.join(root, run['name'])
    for flags_ in evaluations:
      name = evaluation_name(flags_)
      if not os.path.exists(os.path.join(workdir, 'DONE')) or os.path.exists(
        os.path.join(workdir, f'eval_{name}.json')
      ):
        continue
      cmd = [
        sys.executable,
        '-m',
        's2s_jax.evaluate',
        f'--workdir={workdir}',
        '--split=test',
        f'--name={name}',
        launch.cache_flag(),
        *(f'--{k}={v}' for k, v in flags_.items()),
      ]
      code = launch.run_one(cmd, os.path.join(root, f'{run["name"]}.log'), launch.STOP_GRACE_S.value)
      if launch.was_stopped(code):  # (Ctrl-C or SIGTERM reached this process: the sweep stops here)
        sys.exit(f'{run["name"]}: evaluation {name} {launch.describe(code)}.')
      if code:
        failed.append(f'{run["name"]}:{name}')
      print(f'{run["name"]}: eval_{name}.json', flush=True)
  return failed


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config, arg, points, evaluations = load_sweep(_SWEEP.value)
  root = launch.prepare_root(launch.ROOT.value)
  executor = launch.executor(root)  # (checks the resource flags before anything is written)
  keys = sweep_lib.varying_keys(points)
  runs = [{'name': sweep_lib.run_name(p, keys), 'overrides': p} for p in points]
  if len({r['name'] for r in runs}) != len(runs):
    raise app.UsageError('Two points of the sweep have the same run name; make them differ in a swept field.')
  with fileio.replacing(os.path.join(root, 'sweep.json')) as f:
    json.dump(
      {
        'sweep': _SWEEP.value,
        'config': config,
        'config_arg': arg,
        'swept_keys': keys,
        'runs': runs,
        'evaluations': [dict(e, name=evaluation_name(e)) for e in evaluations],
      },
      f,
      indent=2,
    )
  config_flag = f'--config={config}' + (f':{arg}' if arg else '')
  todo = [r for r in runs if not os.path.exists(os.path.join(root, r['name'], 'DONE'))]
  held = {r['name']: holder for r in todo if (holder := workdir_lock.lock_holder(os.path.join(root, r['name'])))}
  for name, holder in held.items():
    print(f'{name}: skipped, its workdir is in use by host {holder.get("host")} pid {holder.get("pid")}.')
  todo = [r for r in todo if r['name'] not in held]
  print(
    f'{len(runs)} runs, {len(runs) - len(todo) - len(held)} already DONE, {len(todo)} to run'
    + (f', {len(held)} skipped (in use by another process).' if held else '.')
  )
  results, pending = {}, list(todo)
  active = []
  while pending or active:
    while pending and (len(active) < launch.PARALLEL.value or launch.EXECUTOR.value == 'slurm'):
      run = pending.pop(0)
      cmd = [
        sys.executable,
        '-m',
        's2s_jax.main',
        config_flag,
        f'--workdir={os.path.join(root, run["name"])}',
        launch.cache_flag(),
        *sweep_lib.override_flags(run['overrides']),
      ]
      log = os.path.join(root, f'{run["name"]}.log')
      executor.update_parameters(name=run['name'])  # (the job's name in squeue)
      try:
        job = executor.submit(launch.run_job, cmd, log, launch.STOP_GRACE_S.value)
      except submitit.core.utils.FailedJobError as e:  # sbatch refused it (a failed point must not stop the others)
        results[run['name']] = message = 'not submitted: ' + '; '.join(str(e).strip().splitlines())
        print(f'{run["name"]}: FAILED ({message})', flush=True)
        continue
      print(f'{run["name"]}: submitted as {launch.job_name(job)}', flush=True)
      active.append((run['name'], job, log))
    time.sleep(2)
    for name, job, log in [a for a in active if a[1].done()]:
      active.remove((name, job, log))
      results[name] = code = launch.outcome(job)  # (a failed job must not stop the others)
      print(f'{name}: {launch.describe(code) if code == 0 else launch.failure_report(job, log, code)}', flush=True)
  failed = [n for n, c in results.items() if c != 0] + run_evaluations(root, runs, evaluations)
  print(f'{len(results) - len(failed)} succeeded, {len(failed)} failed{": " + ", ".join(failed) if failed else ""}.')
  sys.exit(1 if failed else 0)


if __name__ == '__main__':
  app.run(main)
