"""The workdir contract (CONVENTIONS §5): config.json, provenance.json, data_report.json, saves.json, DONE.

A run whose config differs from the one already in its workdir (beyond the fields config_lib.RESUMABLE allows)
refuses with a diff unless allow_config_change is set; a workdir whose recorded progress its checkpoints can no longer
resume refuses (check_resumable). One run per workdir: s2s_jax/workdir_lock.py.
"""

import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import fileio
from s2s_jax import provenance


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A validated, unlocked copy with absolute data paths."""
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(config_lib.to_dict(config))
  config_checks.validate(config)  # after the JSON round trip: what is written to config.json is what was checked
  pipeline.resolve_paths(config.data)
  if config.init.from_workdir:
    config.init.from_workdir = os.path.abspath(os.path.expanduser(config.init.from_workdir))
  return config


def set_data_fields(config: ml_collections.ConfigDict, data) -> None:
  """Fields that come from the data: vocabulary sizes, the input kind, the padded source length and, with
  num_train_epochs, num_train_steps (epochs x the training batches of an epoch: the bucket plan's count)."""
  from s2s_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top

  fields = inputs_lib.source_fields(data.frontend)
  kind = fields['input_kind']
  src_size = len(data.frontend) if kind == 'tokens' else 0
  for key, value in (
    ('src_vocab_size', src_size),
    ('tgt_vocab_size', len(data.tgt_vocab)),
    ('input_features', fields['input_features']),
  ):
    if config.model[key] not in (0, value):
      raise ValueError(f'model.{key}={config.model[key]} but the data gives {value}; leave it 0 (set from data).')
    config.model[key] = value
  if config.model.input_kind not in ('tokens', kind):
    raise ValueError(
      f'model.input_kind={config.model.input_kind!r} but the data gives {kind!r}; leave it tokens (set from data).'
    )
  config.model.input_kind = kind
  config.model.image_channels = fields['image_channels']
  config.model.max_src_len = config.model.max_src_len or config.data.max_src_len
  if config.num_train_epochs:
    per_epoch = data.batches_per_epoch(config.data.batch_size)
    steps = max(1, round(config.num_train_epochs * per_epoch))
    logging.info(
      'num_train_epochs=%g x %g training batches per epoch: num_train_steps=%d.',
      config.num_train_epochs,
      per_epoch,
      steps,
    )
    config.num_train_steps = steps


def check_vocabs(workdir: str, config: ml_collections.ConfigDict, frontend, tgt_vocab) -> None:
  """Fails when `vocab.{src,tgt}.json` of `workdir` (its frontend and target vocabulary) do not belong to its run: a
  size differs from config.json's model fields, or a content hash from provenance.json's tokenizer_sha256 (written
  when the run started)."""
  sizes = {'src': len(frontend) if config.model.input_kind == 'tokens' else 0, 'tgt': len(tgt_vocab)}
  for side in ('src', 'tgt'):
    want = config.model[f'{side}_vocab_size']
    if want and sizes[side] != want:
      raise ValueError(
        f'{os.path.join(workdir, f"vocab.{side}.json")} has {sizes[side]} entries, but config.json '
        f'says model.{side}_vocab_size={want}: the vocabulary file does not belong to this run (restore '
        'the original file, or train a new run).'
      )
  path = os.path.join(workdir, 'provenance.json')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    stored = json.load(f).get('tokenizer_sha256', {})
  for side, key, vocab in (('src', 'source', frontend), ('tgt', 'target', tgt_vocab)):
    if key in stored and stored[key] != vocab.sha256():
      raise ValueError(
        f'{os.path.join(workdir, f"vocab.{side}.json")} differs from the vocabulary this run was '
        f'trained with (its sha256 is not the tokenizer_sha256.{key} of {path}); restore the original '
        'file, or train a new run.'
      )


def _write_json(path: str, obj: Any) -> None:
  fileio.write_json(path, obj, indent=2, sort_keys=True, ensure_ascii=False)


def check_and_write(workdir: str, config: ml_collections.ConfigDict, data, allow_config_change: bool) -> None:
  """Compares with an existing config.json, then writes config.json, provenance.json and data_report.json."""
  path = os.path.join(workdir, 'config.json')
  new = config_lib.to_dict(config)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
    check_vocabs(workdir, config_lib.from_saved(old), data.frontend, data.tgt_vocab)
    if changes := config_lib.diff(old, new):
      message = f'The config differs from {path}:\n  ' + '\n  '.join(changes)
      if not allow_config_change:
        raise ValueError(message + '\nUse another --workdir, or pass --allow_config_change to resume anyway.')
      logging.warning('%s\n(--allow_config_change given: continuing.)', message)
  history = provenance.data_history(workdir, data, allow_config_change)
  starts = provenance.starts(workdir, config.num_train_steps, is_done(workdir))
  if jax.process_index() != 0:
    return
  _write_json(path, new)
  _write_json(os.path.join(workdir, 'data_report.json'), data.report)
  _write_json(os.path.join(workdir, 'provenance.json'), provenance.record(data, history, starts))


SAVES_FILE = 'saves.json'


class NotResumableError(ValueError):
  """The workdir records progress that the checkpoints on disk can no longer resume."""


def _committed_steps(workdir: str) -> list[int]:
  """Steps in `workdir/checkpoints/` (orbax renames a save's temporary folder to `<step>` when it commits)."""
  folder = os.path.join(workdir, 'checkpoints')
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(folder, n)))


def recorded_saves(workdir: str) -> list[int]:
  """The steps `saves.json` records as committed checkpoints of the run (pruned ones included)."""
  try:
    with open(os.path.join(workdir, SAVES_FILE), encoding='utf-8') as f:
      steps = json.load(f).get('committed_steps', [])
  except (OSError, ValueError, AttributeError):
    return []
  return sorted(s for s in steps if isinstance(s, int))


class SaveRecorder:
  """Records each committed checkpoint's step in `saves.json` of the run's workdir and of its seed folders (process
  0; `update` lists checkpoints/, so a save still being written asynchronously is recorded at a later call)."""

  def __init__(self, workdir: str, folders: list[str]):
    self._workdir = workdir
    self._folders = list(dict.fromkeys([workdir, *folders]))
    self._steps = set(recorded_saves(workdir))

  def update(self) -> None:
    if jax.process_index() != 0:
      return
    steps = set(_committed_steps(self._workdir))
    if steps <= self._steps:
      return
    self._steps |= steps
    for folder in self._folders:
      _write_json(os.path.join(folder, SAVES_FILE), {'committed_steps': sorted(self._steps)})


def check_resumable(workdir: str, num_seeds: int = 1) -> None:
  """Refuses a workdir whose run finished (DONE) or recorded a committed checkpoint (saves.json) when no checkpoint
  is left in checkpoints/: training it again would start from step 0 and replace its metrics.jsonl, eval files and
  DONE. A run killed before its first checkpoint committed records none and starts over; a workdir whose every
  checkpoint was found damaged (moved aside to `<step>.damaged-<time>`) starts over as that error said."""
  if _committed_steps(workdir):
    return
  recorded, done = recorded_saves(workdir), is_done(workdir)
  folder = os.path.join(workdir, 'checkpoints')
  if not (recorded or done) or (os.path.isdir(folder) and any('.damaged-' in n for n in os.listdir(folder))):
    return
  from s2s_jax import checkpointing  # pylint: disable=g-import-not-at-top

  what = 'holds a finished run (DONE)' if done else f'records checkpoints up to step {recorded[-1]} in {SAVES_FILE}'
  if parent := checkpointing.seed_parent(workdir):
    raise NotResumableError(
      f'{workdir} {what} but has no checkpoints/ of its own: it is a seed folder of the vmapped run {parent}, whose '
      f'checkpoints/ hold its training state. Continue it by running {parent} (--workdir={parent}); evaluate it '
      f'again with: python -m s2s_jax.evaluate --workdir={workdir} --split=test'
    )
  evaluate = (
    f'python -m s2s_jax.evaluate --workdir={workdir}/seed_<s> --split=test (each seed keeps its best/)'
    if num_seeds > 1
    else f'python -m s2s_jax.evaluate --workdir={workdir} --split=test (with its best/)'
  )
  raise NotResumableError(
    f'{workdir} {what} but no checkpoint is left in {folder}, so it cannot be resumed or continued (training it '
    'again would start from step 0 and replace its metrics.jsonl, eval files and DONE). Restore its checkpoints/ to '
    f'continue it, or train into a new --workdir; to evaluate it again: {evaluate}.'
  )


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'DONE'))


def clear_done(workdir: str) -> None:
  if is_done(workdir) and jax.process_index() == 0:
    os.remove(os.path.join(workdir, 'DONE'))


def mark_done(workdir: str) -> None:
  if jax.process_index() == 0:
    fileio.write_text(os.path.join(workdir, 'DONE'), 'done\n')


def init_params(state, config: ml_collections.ConfigDict, workdir: str, data):
  """`state` with the parameters of config.init.from_workdir (its config.init.checkpoint) for a new run that starts
  from another run (fine-tuning); the optimizer state stays fresh. Both runs must read the same vocabularies (by
  content hash) and build the same parameter tree; each difference is an error naming it. With num_seeds > 1 every
  seed starts from the same parameters."""
  from s2s_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import frontend as frontend_lib  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top

  source, which = config.init.from_workdir, config.init.checkpoint
  if not os.path.exists(os.path.join(source, 'config.json')):
    raise ValueError(f'init.from_workdir={source}: no config.json there; give a workdir written by s2s_jax.main.')
  theirs = {
    'source': frontend_lib.load(os.path.join(source, 'vocab.src.json')),
    'target': vocab_lib.load(os.path.join(source, 'vocab.tgt.json')),
  }
  for side, ours in (('source', data.frontend), ('target', data.tgt_vocab)):
    if theirs[side].sha256() != ours.sha256():
      raise ValueError(
        f"init.from_workdir={source}: its {side} vocabulary differs from this run's (sha256 "
        f'{theirs[side].sha256()[:12]}... vs {ours.sha256()[:12]}...); fine-tune on data tokenised the same way '
        '(the same data.* tokenizer settings and training text).'
      )
  try:
    params, step = checkpointing.restore_params(source, which)
  except ValueError as e:
    raise ValueError(f'init.from_workdir={source}, init.checkpoint={which}: {e}') from None
  seeds = config.num_seeds
  want = jax.tree.map(lambda x: x.shape[1:] if seeds > 1 else x.shape, state.params)
  have = jax.tree.map(lambda x: x.shape, params)
  if want != have:
    flat_want, flat_have = dict(_flat_shapes(want)), dict(_flat_shapes(have))
    differ = sorted(k for k in set(flat_want) | set(flat_have) if flat_want.get(k) != flat_have.get(k))[:5]
    raise ValueError(
      f'init.from_workdir={source}: its parameters do not fit this model ('
      + '; '.join(f'{k}: {flat_have.get(k, "absent")} there, {flat_want.get(k, "absent")} here' for k in differ)
      + '); the model.* fields must match the run it starts from.'
    )
  if seeds > 1:
    params = jax.tree.map(lambda x: np.stack([np.asarray(x)] * seeds), params)
  logging.info('Initialised the parameters from %s (checkpoint %s, step %d).', source, which, step)
  return state.replace(params=jax.tree.map(lambda new, old: np.asarray(new, old.dtype), params, state.params))


def _flat_shapes(tree) -> list[tuple[str, tuple]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]
  return [('/'.join(str(getattr(k, 'key', k)) for k in path), shape) for path, shape in leaves]
