"""Orbax checkpoints: `checkpoints/` (latest N, for resume, with the data-iterator state) and `best/` (parameters of
the best evaluation by eval.metric / eval.mode). The two managers own separate folders, so neither deletes the
other's files. A saved state is a plain dict, never a TrainState object.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import time
from typing import Any

from absl import logging
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp


def _remove_temporary_folders(folder: str) -> None:
  """Removes what interrupted saves left (`<step>.orbax-checkpoint-tmp-*`). Orbax's own cleanup_tmp_directories
  does not run when a best_fn is set and, for the other manager, was seen to leave them on a loaded machine; a
  restart must not depend on either."""
  if jax.process_index() == 0:
    for tmp in glob.glob(os.path.join(folder, '*.orbax-checkpoint-tmp*')):
      logging.warning('Removing %s, left by an interrupted save.', tmp)
      shutil.rmtree(tmp, ignore_errors=True)


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  _remove_temporary_folders(os.path.join(workdir, 'checkpoints'))
  return ocp.CheckpointManager(
    os.path.join(workdir, 'checkpoints'),
    options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
  )


def make_best_manager(workdir: str, metric: str, mode: str) -> ocp.CheckpointManager:
  _remove_temporary_folders(os.path.join(workdir, 'best'))
  return ocp.CheckpointManager(
    os.path.join(workdir, 'best'),
    options=ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda m: m[metric], best_mode=mode, create=True, cleanup_tmp_directories=True
    ),
  )


def state_dict(state) -> dict[str, Any]:
  return {
    'step': state.step,
    'params': state.params,
    'opt_state': state.opt_state,
    'rng': state.rng,
    'log_sums': state.log_sums,
  }


def all_finite(tree) -> bool:
  return all(
    bool(np.all(np.isfinite(x))) for x in jax.tree.leaves(tree) if np.issubdtype(np.asarray(x).dtype, np.floating)
  )


def save(mngr: ocp.CheckpointManager, state, data_iter, force: bool = False) -> None:
  """Saves an unreplicated state and the iterator position (asynchronously); never non-finite parameters.

  Orbax writes a new step to a temporary folder and renames it when complete; older steps beyond max_to_keep are
  removed only after that, so an interrupted save never costs an older checkpoint.
  """
  tree = jax.device_get(state_dict(state))
  step = int(np.max(tree['step']))  # max: vmapped seeds carry one step each (all equal)
  if not all_finite((tree['params'], tree['opt_state'])):
    raise FloatingPointError(
      f'Refusing to checkpoint non-finite parameters at step {step}; the last good '
      f'checkpoint is step {mngr.latest_step()} in {mngr.directory}.'
    )
  mngr.save(
    step,
    force=force,
    args=ocp.args.Composite(state=ocp.args.StandardSave(tree), data_iter=grain.checkpoint.CheckpointSave(data_iter)),
  )


def restore_or_init(mngr: ocp.CheckpointManager, state, data_iter):
  """Restores the newest intact checkpoint (and the iterator, in place) into `state`; `state` if there is none.

  A damaged checkpoint (truncated or missing files, unreadable metadata, non-finite values) is moved aside to
  `checkpoints/<step>.damaged-<time>/` (kept for inspection; orbax never counts it as a step, so the run can save
  that step again) with a warning naming the problem, and the next older one is tried; if every checkpoint is
  damaged this raises instead of silently starting over. A checkpoint whose parameters do not fit the model (their
  tree or shapes differ, e.g. after --allow_config_change of a model field), or whose optimizer state has another
  layout (another optimizer or clipping), is an error that says so, and is left in place: it is not damaged.
  """
  target = jax.device_get(state_dict(state))
  problems = []
  for step in sorted(mngr.all_steps(read=True), reverse=True):
    if mismatch := _shape_mismatch(mngr, step, target, 'params'):  # orbax would restore stored shapes silently
      raise ValueError(
        f'Checkpoint {step} in {mngr.directory} does not fit this model ({mismatch}); a model field '
        'changed (--allow_config_change does not convert checkpoints). Use a new workdir, or undo '
        'the change.'
      )
    if mismatch := _shape_mismatch(mngr, step, target, 'opt_state'):  # a layout, not damage: never moved aside
      raise ValueError(
        f'Checkpoint {step} in {mngr.directory} does not fit this optimizer ({mismatch}); an optim field changed '
        '(e.g. optim.optimizer, optim.grad_clip_norm) or the code that wrote it keeps another optimizer state. '
        'The checkpoint is left in place: undo the change, or use a new workdir (translate and evaluate read only '
        'its parameters).'
      )
    try:
      restored = mngr.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data_iter=grain.checkpoint.CheckpointRestore(data_iter)
        ),
      )
      if not all_finite(restored.state['params']):
        raise ValueError('non-finite parameters')
    except Exception as e:  # pylint: disable=broad-except  (any failure means this checkpoint is unusable)
      problems.append(f'step {step}: {type(e).__name__}: {str(e)[:300]}')
      aside = _move_aside(mngr, step)
      logging.warning(
        'Checkpoint %d in %s is damaged (%s); moved it to %s; trying an older one.',
        step,
        mngr.directory,
        problems[-1],
        aside,
      )
      continue
    if problems:
      logging.warning('Resuming from step %d after skipping damaged checkpoints: %s', step, '; '.join(problems))
    return state.replace(**restored.state)
  if problems:
    raise RuntimeError(
      f'No intact checkpoint in {mngr.directory}: '
      + '; '.join(problems)
      + '. The damaged ones were moved to <step>.damaged-<time>; run again to start from scratch.'
    )
  return state


def _move_aside(mngr: ocp.CheckpointManager, step: int) -> str:
  """Renames a damaged step folder to `<step>.damaged-<time>` and makes the manager forget the step."""
  folder = os.path.join(os.fspath(mngr.directory), str(step))
  aside = f'{folder}.damaged-{time.strftime("%Y%m%dT%H%M%S")}'
  os.rename(folder, aside)
  mngr.reload()
  return aside


def _shape_mismatch(mngr: ocp.CheckpointManager, step: int, target, part: str) -> str | None:
  """How the stored tree or shapes of `part` ('params', 'opt_state') differ from `target`'s, when the stored metadata
  is readable (None if it is not, or if they agree)."""
  try:
    stored = ocp.StandardCheckpointer().metadata(os.path.join(os.fspath(mngr.directory), str(step), 'state'))
    stored = jax.tree.map(lambda m: tuple(m.shape), stored.item_metadata.tree[part])
  except Exception:  # pylint: disable=broad-except  (unreadable metadata: the checkpoint is damaged)
    return None
  wanted = jax.tree.map(lambda x: tuple(np.shape(x)), target[part])
  flat_stored, flat_wanted = _flat(stored), _flat(wanted)
  if flat_stored.keys() != flat_wanted.keys():
    extra, missing = sorted(flat_stored.keys() - flat_wanted.keys()), sorted(flat_wanted.keys() - flat_stored.keys())
    return f'stored but not in the model: {extra[:3]}; in the model but not stored: {missing[:3]}'
  for key, shape in flat_wanted.items():
    if flat_stored[key] != shape:
      return f'{key} is {flat_stored[key]} in the checkpoint and {shape} in the model'
  return None


def _flat(tree) -> dict[str, Any]:
  """Leaves by path, the path written the same whether a node is stored as a dict or is a named tuple's field
  (orbax's metadata gives `['mu']` where the optimizer state has `.mu`)."""

  def name(entry) -> str:
    for attr in ('key', 'name', 'idx'):
      if hasattr(entry, attr):
        return str(getattr(entry, attr))
    return str(entry)

  return {'/'.join(map(name, path)): v for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def best_value(mngr: ocp.CheckpointManager, metric: str) -> float | None:
  step = mngr.best_step()
  if step is None:
    return None
  return (mngr.metrics(step) or {}).get(metric)


def is_better(value: float, best: float | None, mode: str) -> bool:
  return best is None or (value > best if mode == 'max' else value < best)


def save_best(mngr: ocp.CheckpointManager, step: int, params, metrics: dict[str, float]) -> None:
  mngr.save(
    step, metrics=metrics, force=True, args=ocp.args.Composite(params=ocp.args.StandardSave(jax.device_get(params)))
  )


def restore_params(workdir: str, which: str = 'best') -> tuple[Any, int]:
  """Parameters (numpy) and their step: from `best/` ('best'), the newest of `checkpoints/` ('latest'), a step of
  either ('1200'), the average of saved steps ('avg:K': the last K; 'avg:S1,S2,...': those steps; see
  `average_params`), or the newest step of a folder of parameter checkpoints (scripts/average_checkpoints.py's
  output; a path relative to the workdir, e.g. 'averaged', or absolute).

  Raises ValueError with a one-line message naming the steps the workdir keeps when `which` names nothing there."""
  workdir = os.path.abspath(workdir)  # orbax reads absolute paths only; --workdir may be relative
  if which.startswith('avg:'):
    return average_params(workdir, which[len('avg:') :])
  if which not in ('best', 'latest') and not which.isdigit():
    folder = _folder(workdir, which)
    try:
      return _restore(folder, 'params', None)
    except Exception as e:  # pylint: disable=broad-except  (orbax's errors name no flag; one line that does)
      raise ValueError(
        f'--checkpoint={which}: {folder} is not a folder of parameter checkpoints (as scripts/average_checkpoints.py '
        f'writes): {type(e).__name__}: {_one_line(e)}; {kept_steps(workdir)}.'
      ) from None
  candidates = saved_steps(workdir, params_only=which == 'best')
  if which.isdigit():
    candidates = [c for c in candidates if c[0] == int(which)]
  if not candidates:
    wanted = {'best': f'{workdir}/best holds no checkpoint', 'latest': 'there is no checkpoint'}
    problem = wanted.get(which) or f'step {int(which)} is not kept'
    raise ValueError(f'--checkpoint={which}: {problem}; {kept_steps(workdir)}.')
  step, item, folder = max(candidates, key=lambda c: (c[0], c[1] != 'params'))
  return _restore(folder, item, step)


def _one_line(e: Exception) -> str:
  return ' '.join(str(e).split())[:300]


def _folder(workdir: str, which: str) -> str:
  """The folder a --checkpoint=<folder> names (relative to the workdir, or absolute); it must exist."""
  folder = which if os.path.isabs(which) else os.path.join(workdir, which)
  if not which or not os.path.isdir(folder):
    raise ValueError(
      f'--checkpoint={which}: give best, latest, a step number, avg:K, avg:STEP1,STEP2,... or a folder of parameter '
      f'checkpoints (e.g. averaged), and {folder} is no folder; {kept_steps(workdir)}.'
    )
  return folder


def kept_steps(workdir: str) -> str:
  """What a workdir keeps, for error messages: '<workdir> keeps N checkpoint steps ([...]), best/: [...]'."""
  if not os.path.isdir(workdir):
    return f'{workdir} does not exist'
  saved = saved_steps(workdir)
  steps_ = sorted({step for step, _, _ in saved})
  best = sorted(step for step, item, _ in saved if item == 'params')
  return f'{workdir} keeps {len(steps_)} checkpoint steps ({steps_}), best/: {best}'


AVERAGE_RECORD = 'average.json'  # in a folder written by scripts/average_checkpoints.py: {'workdir', 'steps'}


def averaged_steps(workdir: str, which: str) -> list[int]:
  """The steps whose mean `which` is: those of 'avg:...' (checked as `average_params` does), those recorded in a
  folder written by scripts/average_checkpoints.py, else [] (one checkpoint, not an average)."""
  if which.startswith('avg:'):
    return _average_steps(workdir, which[len('avg:') :])
  if which in ('best', 'latest') or which.isdigit():
    return []
  try:
    with open(os.path.join(_folder(workdir, which), AVERAGE_RECORD), encoding='utf-8') as f:
      return [int(s) for s in json.load(f)['steps']]
  except (OSError, ValueError, KeyError, TypeError):
    return []


def _seed_index(workdir: str) -> int | None:
  """k when `workdir` is PARENT/seed_<s>, the k-th seed of a vmapped run (num_seeds > 1), whose training states are
  stacked in PARENT/checkpoints/; else None."""
  parent, name = os.path.split(os.path.abspath(workdir))
  match = re.fullmatch(r'seed_(\d+)', name)
  try:
    with open(os.path.join(parent, 'config.json'), encoding='utf-8') as f:
      config = json.load(f)
  except (OSError, ValueError):
    return None
  k = int(match.group(1)) - config.get('seed', 0) if match else -1
  return k if 0 <= k < config.get('num_seeds', 1) else None


def seed_parent(workdir: str) -> str | None:
  """PARENT when `workdir` is PARENT/seed_<s>, a seed of a vmapped run (its training state is in PARENT/checkpoints/);
  else None."""
  return os.path.dirname(os.path.abspath(workdir)) if _seed_index(workdir) is not None else None


def saved_steps(workdir: str, params_only: bool = False) -> list[tuple[int, str, str]]:
  """(step, item, folder) of every checkpoint of a workdir: best/ ('params') and checkpoints/ ('state'); for a seed
  of a vmapped run, its slice of the run's stacked states ('state[k]')."""
  folders = {'params': os.path.join(workdir, 'best'), 'state': os.path.join(workdir, 'checkpoints')}
  if not os.path.isdir(folders['state']) and (k := _seed_index(workdir)) is not None:
    folders = {'params': folders['params'], f'state[{k}]': os.path.join(os.path.dirname(workdir), 'checkpoints')}
  out = []
  for item, folder in folders.items():
    if os.path.isdir(folder) and (not params_only or item == 'params'):
      # Listed from the file system, not by a CheckpointManager: a manager's constructor is a barrier of every
      # process of a multi-host job, and whether `folder` exists yet differs between processes (process 0 may
      # already have created best/), so a manager here paired the wrong barriers (a sync name mismatch).
      out += [(step, item, folder) for step in sorted(ocp.utils.checkpoint_steps(folder))]
  return out


def _restore(folder: str, item: str, step: int | None) -> tuple[Any, int]:
  seed = int(item[len('state[') : -1]) if item.startswith('state[') else None
  name = 'state' if seed is not None else item
  with ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{folder} holds no checkpoint.')
    restored = mngr.restore(step, args=ocp.args.Composite(**{name: ocp.args.StandardRestore()}))
  tree = restored[name]
  if seed is not None:
    return jax.tree.map(lambda x: np.asarray(x)[seed], tree['params']), step
  return (tree['params'] if item == 'state' else tree), step


def _average_steps(workdir: str, spec: str) -> list[int]:
  """The saved steps 'avg:<spec>' names ('K': the last K; 'S1,S2,...': those), or a one-line ValueError naming the
  kept steps."""
  available = sorted({step for step, _, _ in saved_steps(workdir)})
  kept = kept_steps(workdir)
  if not spec.strip():
    raise ValueError(f'avg:{spec}: expected avg:K (the last K steps) or avg:STEP1,STEP2,...; {kept}.')
  if not available:
    raise ValueError(f'avg:{spec}: there is no checkpoint to average; {kept}.')
  if ',' not in spec and re.fullmatch(r'\s*[+-]?\d+\s*', spec):
    k = int(spec)
    if not 1 <= k <= len(available):
      more = ', or keep more with --config.keep_checkpoints' if k > len(available) else ''
      raise ValueError(f'avg:{spec}: {kept}; ask for avg:1 to avg:{len(available)}{more}.')
    return available[-k:]
  try:
    steps_ = sorted({int(x) for x in spec.split(',') if x.strip()})
  except ValueError:
    raise ValueError(f'avg:{spec}: expected avg:K or avg:STEP1,STEP2,... (integers); {kept}.') from None
  missing = [x for x in steps_ if x not in available]
  if missing or not steps_:
    raise ValueError(f'avg:{spec}: step(s) {missing} not saved; {kept}.')
  return steps_


def average_params(workdir: str, spec: str) -> tuple[Any, int]:
  """The element-wise mean of the parameters of saved steps (checkpoint averaging): 'K' = the last K distinct steps
  of best/ and checkpoints/, 'S1,S2,...' = those steps. Returns the mean (float32 leaves) and the newest step."""
  steps_ = _average_steps(workdir, spec)
  trees = [restore_params(workdir, str(step))[0] for step in steps_]
  paths = [{jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(t)} for t in trees]
  for step, shapes in zip(steps_[1:], paths[1:]):
    if shapes != paths[0]:
      diff = sorted(k for k in set(shapes) | set(paths[0]) if shapes.get(k) != paths[0].get(k))
      raise ValueError(
        f'avg:{spec}: step {step} and step {steps_[0]} have different parameters: {diff[:5]} '
        f'({shapes.get(diff[0])} vs {paths[0].get(diff[0])}); they are not one model.'
      )
  mean = jax.tree.map(lambda *xs: np.mean(np.stack([np.asarray(x, np.float32) for x in xs]), axis=0), *trees)
  return mean, steps_[-1]


def save_params(folder: str, step: int, params) -> None:
  """Writes a parameter checkpoint that restore_params reads as a folder (e.g. an average)."""
  with ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=True)) as mngr:
    mngr.save(step, force=True, args=ocp.args.Composite(params=ocp.args.StandardSave(jax.device_get(params))))
    mngr.wait_until_finished()


def params_sha256(params) -> str:
  """A digest of a parameter tree's values (leaves in tree order, as float32/int bytes): equal trees, equal digests."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(params)):
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()
