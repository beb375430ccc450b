"""The workdir contract (CONVENTIONS §5): config.json, provenance.json, data_report.json, DONE.

A run whose config differs from the one already in its workdir (beyond the fields config_lib.RESUMABLE allows)
refuses with a diff unless allow_config_change is set.
"""

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import psutil

from s2s_jax import config_checks
from s2s_jax import config_lib

_PACKAGES = (
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax-checkpoint',
  'tensorflow-datasets',
  'grain',
  'numpy',
  'ml-collections',
  'absl-py',
  'sacrebleu',
  'tensorboardX',
)
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A validated, unlocked copy with absolute data paths."""
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict(config_lib.to_dict(config))
  config_checks.validate(config)  # after the JSON round trip: what is written to config.json is what was checked
  pipeline.resolve_paths(config.data)
  return config


def set_data_fields(config: ml_collections.ConfigDict, data) -> None:
  """Fields that come from the data: vocabulary sizes, the input kind, the padded source length and, with
  num_train_epochs, num_train_steps (epochs x the training batches of an epoch: the bucket plan's count)."""
  from s2s_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top

  fields = inputs_lib.source_fields(data.src_vocab)
  kind = fields['input_kind']
  src_size = len(data.src_vocab) if kind == 'tokens' else 0
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


def check_vocabs(workdir: str, config: ml_collections.ConfigDict, src_vocab, tgt_vocab) -> None:
  """Fails when `vocab.{src,tgt}.json` of `workdir` do not belong to its run: a size differs from config.json's
  model fields, or a content hash from provenance.json's tokenizer_sha256 (written when the run started)."""
  sizes = {'src': len(src_vocab) if config.model.input_kind == 'tokens' else 0, 'tgt': len(tgt_vocab)}
  for side, vocab in (('src', src_vocab), ('tgt', tgt_vocab)):
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
  for side, key, vocab in (('src', 'source', src_vocab), ('tgt', 'target', tgt_vocab)):
    if key in stored and stored[key] != vocab.sha256():
      raise ValueError(
        f'{os.path.join(workdir, f"vocab.{side}.json")} differs from the vocabulary this run was '
        f'trained with (its sha256 is not the tokenizer_sha256.{key} of {path}); restore the original '
        'file, or train a new run.'
      )


def _write_json(path: str, obj: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
  os.replace(tmp, path)


def check_and_write(workdir: str, config: ml_collections.ConfigDict, data, allow_config_change: bool) -> None:
  """Compares with an existing config.json, then writes config.json, provenance.json and data_report.json."""
  path = os.path.join(workdir, 'config.json')
  new = config_lib.to_dict(config)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
    check_vocabs(workdir, config_lib.from_saved(old), data.src_vocab, data.tgt_vocab)
    if changes := config_lib.diff(old, new):
      message = f'The config differs from {path}:\n  ' + '\n  '.join(changes)
      if not allow_config_change:
        raise ValueError(message + '\nUse another --workdir, or pass --allow_config_change to resume anyway.')
      logging.warning('%s\n(--allow_config_change given: continuing.)', message)
  history = _data_history(workdir, data, allow_config_change)
  starts = _starts(workdir, config)
  if jax.process_index() != 0:
    return
  _write_json(path, new)
  _write_json(os.path.join(workdir, 'data_report.json'), data.report)
  _write_json(os.path.join(workdir, 'provenance.json'), provenance(data, history, starts))


def _git(*args: str) -> str:
  try:
    return subprocess.run(
      ['git', '-C', _REPO, *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ''


def _cpu() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
  out = {'python': platform.python_version()}
  for name in _PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def provenance(
  data, data_history: list[dict[str, Any]] | None = None, starts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
  """What produced a run. The data's identity is its fingerprint (`data_sha256`), read from the manifest made
  when the dataset was prepared (`data_manifest`: each raw file's size, time and sha256); `data_history` lists
  the fingerprints a run trained on, with the step each began at; `starts` lists every start of the run (the
  first, then each resume) with the step it began at, its UTC time and commit, so a result says how often its
  run was stopped and by which code each part was trained (the top-level git_sha is the latest start's)."""
  git_sha, git_dirty = _git('rev-parse', 'HEAD'), bool(_git('status', '--porcelain'))
  return {
    'git_sha': git_sha,
    'git_dirty': git_dirty,
    'starts': starts or [_start_record(0, git_sha, git_dirty)],
    'packages': _versions(),
    'devices': [str(d) for d in jax.devices()],
    'process_count': jax.process_count(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'cpu': _cpu(),
    'cpu_count': os.cpu_count(),
    'command_line': sys.argv,
    'data_sha256': data.fingerprint,
    'data_manifest': data.manifest,
    'data_history': data_history or [{'data_sha256': data.fingerprint, 'from_step': 0}],
    'tokenizer_sha256': {'source': data.src_vocab.sha256(), 'target': data.tgt_vocab.sha256()},
  }


def _start_record(step: int, git_sha: str | None = None, git_dirty: bool | None = None) -> dict[str, Any]:
  return {
    'from_step': step,
    'utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    'git_sha': _git('rev-parse', 'HEAD') if git_sha is None else git_sha,
    'git_dirty': bool(_git('status', '--porcelain')) if git_dirty is None else git_dirty,
  }


def _starts(workdir: str, config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """The start history to record: the old one plus this start, unless the run is finished (then nothing runs).
  A provenance.json written before start histories begins its history with this start."""
  path = os.path.join(workdir, 'provenance.json')
  old = []
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = json.load(f).get('starts') or []
  step = _latest_step_on_disk(workdir)
  if old and is_done(workdir) and step >= config.num_train_steps:
    return old
  return old + [_start_record(step)]


def _latest_step_on_disk(workdir: str) -> int:
  folder = os.path.join(workdir, 'checkpoints')
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


def _data_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> str:
  """The raw files that differ between two manifests, in words."""
  if not old or not new:
    return 'the dataset was prepared from other data'
  before, after = ({f['path']: f for f in m['files']} for m in (old, new))
  changed = [p for p in sorted(set(before) & set(after)) if before[p]['sha256'] != after[p]['sha256']]
  parts = [
    f'{label}: {", ".join(paths[:5])}'
    for label, paths in (
      ('changed', changed),
      ('added', sorted(set(after) - set(before))),
      ('removed', sorted(set(before) - set(after))),
    )
    if paths
  ]
  return '; '.join(parts) or f'{old["dataset"]}/{old["config"]} -> {new["dataset"]}/{new["config"]}'


def _data_history(workdir: str, data, allow_change: bool) -> list[dict[str, Any]] | None:
  """The data history to record; raises when the data changed since the run started (unless allowed)."""
  path = os.path.join(workdir, 'provenance.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    old = json.load(f)
  history = old.get('data_history')
  if not isinstance(old.get('data_sha256'), str) or not history:
    return None  # written before data fingerprints: nothing to compare with
  if history[-1]['data_sha256'] == data.fingerprint:
    return history
  message = (
    f'The data changed since this run started ({_data_changes(old.get("data_manifest"), data.manifest)}); '
    f'{path} records data_sha256 {history[-1]["data_sha256"][:12]}..., the data now gives '
    f'{data.fingerprint[:12]}....'
  )
  if not allow_change:
    raise ValueError(
      message + ' Restore the data, use another --workdir, or pass --allow_config_change to continue '
      'on the new data (the iterator position then indexes a new order of examples).'
    )
  step = _latest_step_on_disk(workdir)
  logging.warning(
    '%s\n(--allow_config_change given: continuing from step %d; provenance.json keeps the history.)', message, step
  )
  return history + [{'data_sha256': data.fingerprint, 'from_step': step}]


LOCK_FILE = 'lock.json'
_HEARTBEAT_S = 60.0  # the holder rewrites its lock file this often
_EXPIRES_S = 600.0  # a lock of another host whose heartbeat is older than this is taken over


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir."""


def _me() -> dict[str, Any]:
  return {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'start_time': psutil.Process().create_time(),
    'heartbeat': time.time(),
    'command': ' '.join(sys.argv),
  }


def _describe(holder: dict[str, Any]) -> str:
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('start_time', 0)))
  return f'host {holder.get("host")}, pid {holder.get("pid")}, started {started}: {holder.get("command", "?")}'


def _read_lock(path: str) -> dict[str, Any] | None:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except ValueError:
    return {}  # torn or foreign: treated as left by a dead process


def _stale_reason(holder: dict[str, Any]) -> str | None:
  """Why a lock's holder is gone (None: it is alive, or may be)."""
  if not holder:
    return 'the lock file is unreadable'
  if holder.get('host') == socket.gethostname():
    try:
      started = psutil.Process(holder['pid']).create_time()
    except (psutil.NoSuchProcess, KeyError):
      return f'process {holder.get("pid")} is gone'
    if abs(started - holder.get('start_time', 0)) > 1.0:
      return f'pid {holder["pid"]} now belongs to another process'
    return None
  age = time.time() - holder.get('heartbeat', 0)
  return f'its heartbeat stopped {age:.0f} s ago' if age > _EXPIRES_S else None


def lock_holder(workdir: str) -> dict[str, Any] | None:
  """The live holder of `workdir`'s lock, or None when the workdir is free."""
  holder = _read_lock(os.path.join(workdir, LOCK_FILE))
  return holder if holder is not None and _stale_reason(holder) is None else None


class WorkdirLock:
  """One run per workdir: `DIR/lock.json` names the holder (host, pid, process start time, command) and is rewritten
  every minute (its heartbeat). A second run refuses at once, naming the holder. A lock left by a dead process of
  this host (pid gone, or reused by another program: the start times differ) is taken over with a warning; a lock
  of another host is refused until its heartbeat is 10 minutes old (the holder is then dead or hung), then taken
  over with a warning. Checks and takeovers happen under an flock of the workdir folder, so two processes starting
  at once cannot both win.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._me, self._stop, self._thread = None, threading.Event(), None

  def __enter__(self) -> 'WorkdirLock':
    guard = os.open(os.path.dirname(self.path) or '.', os.O_RDONLY)  # an flock of the workdir folder itself
    try:
      fcntl.flock(guard, fcntl.LOCK_EX)
      holder = _read_lock(self.path)
      if holder is not None:
        reason = _stale_reason(holder)
        if reason is None:
          hint = (
            'wait for it to finish or stop it'
            if holder.get('host') == socket.gethostname()
            else f'if that job is gone, delete {self.path} (it expires {_EXPIRES_S:.0f} s after its last heartbeat)'
          )
          raise WorkdirBusyError(
            f'{os.path.dirname(self.path)} is in use by {_describe(holder)}; {hint}, or use another --workdir.'
          )
        logging.warning('Taking over the lock of %s (%s).', _describe(holder), reason)
      self._me = _me()
      _write_json(self.path, self._me)
    finally:
      os.close(guard)  # releases the flock
    self._thread = threading.Thread(target=self._beat, daemon=True, name='workdir-heartbeat')
    self._thread.start()
    return self

  def _beat(self) -> None:
    while not self._stop.wait(_HEARTBEAT_S):
      holder = _read_lock(self.path)
      if not holder or (holder.get('pid'), holder.get('host')) != (self._me['pid'], self._me['host']):
        logging.error(
          'The lock %s was taken over by %s while this run holds the workdir.', self.path, _describe(holder or {})
        )
        return
      self._me['heartbeat'] = time.time()
      _write_json(self.path, self._me)

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    holder = _read_lock(self.path)
    if holder and (holder.get('pid'), holder.get('host')) == (self._me['pid'], self._me['host']):
      os.remove(self.path)


@contextlib.contextmanager
def hold(workdir: str):
  """Creates `workdir` and holds its lock while the block runs. In a multi-host job process 0 holds it for the
  job, and every process raises WorkdirBusyError when process 0 could not take it."""
  os.makedirs(workdir, exist_ok=True)
  lock, error = WorkdirLock(workdir), ''
  if jax.process_index() == 0:
    try:
      lock.__enter__()
    except WorkdirBusyError as e:
      error = str(e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    if multihost_utils.broadcast_one_to_all(np.int32(bool(error))) and not error:
      error = f'process 0 of this job could not take the lock of {workdir} (see its log).'
  if error:
    raise WorkdirBusyError(error)
  try:
    yield
  finally:
    if jax.process_index() == 0:
      lock.__exit__(None, None, None)


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'DONE'))


def clear_done(workdir: str) -> None:
  if is_done(workdir) and jax.process_index() == 0:
    os.remove(os.path.join(workdir, 'DONE'))


def mark_done(workdir: str) -> None:
  if jax.process_index() == 0:
    path = os.path.join(workdir, 'DONE')
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
      f.write('done\n')
    os.replace(path + '.tmp', path)
