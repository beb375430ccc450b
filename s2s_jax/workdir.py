"""The workdir contract (CONVENTIONS §5): config.json, provenance.json, data_report.json, DONE.

A run whose config differs from the one already in its workdir (beyond the fields config_lib.RESUMABLE allows)
refuses with a diff unless allow_config_change is set.
"""

import contextlib
import fcntl
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import psutil

from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import fileio
from s2s_jax import provenance
from s2s_jax import slurm


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
  fileio.write_json(path, obj, indent=2, sort_keys=True, ensure_ascii=False)


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
  history = provenance.data_history(workdir, data, allow_config_change)
  starts = provenance.starts(workdir, config.num_train_steps, is_done(workdir))
  if jax.process_index() != 0:
    return
  _write_json(path, new)
  _write_json(os.path.join(workdir, 'data_report.json'), data.report)
  _write_json(os.path.join(workdir, 'provenance.json'), provenance.record(data, history, starts))


LOCK_FILE = 'lock.json'
HEARTBEAT_S = 60.0  # the holder rewrites its lock file this often (env S2S_LOCK_HEARTBEAT_S overrides it, for tests)
EXPIRES_S = 600.0  # a lock whose heartbeat counter stood still this long is taken over (env S2S_LOCK_EXPIRES_S)
_RETRY_S = 5.0  # a failed heartbeat write is retried this often
EXIT_LOCK_LOST = 75  # main's exit code when the run lost its lock (EX_TEMPFAIL of sysexits.h)


class WorkdirBusyError(RuntimeError):
  """Another live process holds the workdir."""


class LockLost(BaseException):  # like preemption.Preempted: no `except Exception` on the way swallows it
  """This run no longer holds its workdir lock: another process took it over or the file was removed (`abandon`:
  the run stops writing into the workdir at once), or it could not be refreshed (the run stopped as if preempted,
  with a checkpoint). main exits with EXIT_LOCK_LOST."""

  def __init__(self, message: str, abandon: bool):
    super().__init__(message)
    self.abandon = abandon


def _env_seconds(name: str, default: float) -> float:
  value = os.environ.get(name)
  if not value:
    return default
  try:
    seconds = float(value)
  except ValueError:
    raise ValueError(f'{name}={value!r} is not a number of seconds.') from None
  if not seconds > 0:
    raise ValueError(f'{name}={value!r} must be > 0 seconds.')
  return seconds


def _read_first_line(path: str) -> str | None:
  try:
    with open(path, encoding='utf-8') as f:
      return f.readline().strip() or None
  except OSError:
    return None


def _namespace() -> dict[str, Any]:
  """What makes a pid meaningful: the pid namespace (its inode) and the boot (Linux; None elsewhere)."""
  try:
    pid_ns = os.stat('/proc/self/ns/pid').st_ino
  except OSError:
    pid_ns = None
  return {'pid_ns': pid_ns, 'boot_id': _read_first_line('/proc/sys/kernel/random/boot_id')}


def _me(heartbeat_s: float, expires_s: float) -> dict[str, Any]:
  return {
    'host': socket.gethostname(),
    'pid': os.getpid(),
    'start_time': psutil.Process().create_time(),
    **_namespace(),
    'id': uuid.uuid4().hex,  # this holding: ownership is judged by it, never by host and pid
    'beat': 0,  # the heartbeat counter, incremented at every rewrite
    'heartbeat': time.time(),  # for people reading the file; no other host compares it with its clock
    'heartbeat_s': heartbeat_s,
    'expires_s': expires_s,
    'slurm': slurm.job(),  # a requeued job's next start takes over at once the lock of its earlier one
    'command': ' '.join(sys.argv),
  }


def _describe(holder: dict[str, Any]) -> str:
  started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('start_time', 0)))
  job = holder.get('slurm')
  job = f' (SLURM job {job.get("job_id")}, restart {job.get("restart")})' if isinstance(job, dict) else ''
  return f'host {holder.get("host")}, pid {holder.get("pid")}{job}, started {started}: {holder.get("command", "?")}'


def _read_lock(path: str) -> dict[str, Any] | None:
  try:
    with open(path, encoding='utf-8') as f:
      holder = json.load(f)
  except FileNotFoundError:
    return None
  except ValueError:
    return {}  # torn or foreign: treated as left by a dead process
  return holder if isinstance(holder, dict) else {}


def pid_is_local(holder: dict[str, Any]) -> bool:
  """Whether the holder's pid can be looked up here: same host name, pid namespace and boot. Two containers may
  share a host name but not their processes; a lock without these fields (older code) is not trusted either."""
  mine = _namespace()
  return (
    holder.get('host') == socket.gethostname()
    and 'pid_ns' in holder
    and all(holder.get(k) == v for k, v in mine.items())
  )


def _dead_reason(holder: dict[str, Any]) -> str | None:
  """Why a holder whose pid is comparable is gone (None: it is alive)."""
  try:
    started = psutil.Process(int(holder['pid'])).create_time()
  except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
    return f'process {holder.get("pid")} is gone'
  if abs(started - float(holder.get('start_time') or 0)) > 1.0:
    return f'pid {holder["pid"]} now belongs to another process'
  return None


def _expires_s(holder: dict[str, Any]) -> float:
  """The holder's own expiry (it stops by itself after half of it without a refresh), else this process's."""
  value = holder.get('expires_s')
  if isinstance(value, (int, float)) and value > 0:
    return float(value)
  return _env_seconds('S2S_LOCK_EXPIRES_S', EXPIRES_S)


def _file_age_s(path: str) -> float | None:
  """Seconds since `path` was last written, by the clock of the file system that holds it: a probe file written
  beside it gets the file server's current time (None when the folder is not writable)."""
  try:
    written = os.stat(path).st_mtime
    fd, probe = tempfile.mkstemp(prefix='.lock-probe.', dir=os.path.dirname(path) or '.')
    try:
      now = os.fstat(fd).st_mtime
    finally:
      os.close(fd)
      os.remove(probe)
  except OSError:
    return None
  return now - written


def lock_holder(workdir: str) -> dict[str, Any] | None:
  """The live holder of `workdir`'s lock, or None when the workdir is free (for drivers that skip held runs; a
  starting run judges the lock itself, see WorkdirLock). A holder on this host, pid namespace and boot is alive
  while its process is; another one while its lock file was rewritten within its expiry, by the file system's
  clock (never by comparing two hosts' clocks)."""
  path = os.path.join(workdir, LOCK_FILE)
  holder = _read_lock(path)
  if not holder:
    return None
  if pid_is_local(holder):
    return None if _dead_reason(holder) else holder
  age = _file_age_s(path)
  return None if age is not None and age > _expires_s(holder) else holder


class WorkdirLock:
  """One run per workdir: `DIR/lock.json` names the holder (host, pid, process start time, pid namespace, boot id,
  SLURM job and restart count, command) and carries a heartbeat counter that the holder increments when it rewrites
  the file, every minute.

  Starting: a lock of a process on this host, pid namespace and boot is taken over with a warning when that
  process is gone (or its pid now belongs to another program: the start times differ), and refused while it is
  alive. A lock left by an earlier start of this process's own SLURM job (the same cluster and job id, a lower
  SLURM_RESTART_COUNT: the job was requeued, perhaps onto another node) is taken over at once, with a warning. Any
  other lock (another host, another container on a host of the same name, another boot) cannot be judged
  at once: with `wait_s` = 0 it is refused at once, naming the holder; with `wait_s` = N the starting process
  watches the counter for up to N seconds on its own monotonic clock and takes the lock over (with a warning) only
  when the counter stood still for the holder's expiry (10 minutes). Checks and takeovers happen under an flock of
  the workdir folder, so two processes starting at once cannot both win.

  Holding: a heartbeat thread rewrites the file. When it finds the lock taken over by another process, or removed,
  it sets `lost` (the run then stops without writing anything more: `check` raises LockLost). A failed rewrite is
  retried every few seconds; when the lock has gone unrefreshed for half its expiry (before any other process may
  take it over) it sets `unrefreshed` and calls `on_unrefreshed` (the run stops as if preempted).
  """

  def __init__(
    self,
    workdir: str,
    wait_s: float = 0.0,
    heartbeat_s: float | None = None,
    expires_s: float | None = None,
    on_unrefreshed=None,
  ):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.wait_s = wait_s
    self.heartbeat_s = heartbeat_s or _env_seconds('S2S_LOCK_HEARTBEAT_S', HEARTBEAT_S)
    self.expires_s = expires_s or _env_seconds('S2S_LOCK_EXPIRES_S', EXPIRES_S)
    self.lost: str | None = None
    self.unrefreshed: str | None = None
    self._on_unrefreshed = on_unrefreshed
    self._me, self._stop, self._thread = None, threading.Event(), None

  @contextlib.contextmanager
  def _flock(self):
    guard = os.open(os.path.dirname(self.path) or '.', os.O_RDONLY)  # an flock of the workdir folder itself
    try:
      fcntl.flock(guard, fcntl.LOCK_EX)
      yield
    finally:
      os.close(guard)  # releases the flock

  def _write(self) -> None:
    _write_json(self.path, self._me)

  def __enter__(self) -> 'WorkdirLock':
    start = time.monotonic()
    first = seen = None  # (the holder's identity and counter, when this process first saw them so: its own clock)
    while True:
      with self._flock():
        holder = _read_lock(self.path)
        now = time.monotonic()
        if holder:
          observed = (holder.get('id'), holder.get('host'), holder.get('pid'), holder.get('beat'))
          if seen is None or seen[0] != observed:
            seen = (observed, now)
          first = first or seen
        reason = self._takeover_reason(holder, seen, now)
        if reason is not None:
          if reason:
            logging.warning('Taking over the lock of %s (%s).', _describe(holder), reason)
          self._me = _me(self.heartbeat_s, self.expires_s)
          self._write()
          break
      left = self.wait_s - (time.monotonic() - start)
      if left <= 0:
        raise WorkdirBusyError(self._busy_message(holder, advanced=seen is not first))
      time.sleep(min(left, max(0.05, min(1.0, _expires_s(holder) / 20))))
    self._thread = threading.Thread(target=self._beat, daemon=True, name='workdir-heartbeat')
    self._thread.start()
    return self

  @staticmethod
  def _takeover_reason(holder, seen, now: float) -> str | None:
    """'' when the workdir is free, why the lock may be taken over, or None while its holder is alive or cannot be
    judged yet. `seen`: the holder's identity and counter and when they were first seen so."""
    if holder is None:
      return ''
    if not holder:
      return 'the lock file is unreadable'
    if requeued := slurm.earlier_start(holder.get('slurm')):
      return requeued
    if pid_is_local(holder):
      return _dead_reason(holder)
    if now - seen[1] >= _expires_s(holder):
      return f'its heartbeat counter stood at {holder.get("beat")} for {now - seen[1]:.0f} s'
    return None

  def _busy_message(self, holder: dict[str, Any], advanced: bool) -> str:
    head = f'{os.path.dirname(self.path)} is in use by {_describe(holder)}'
    if pid_is_local(holder):
      return f'{head}; wait for it to finish or stop it, or use another --workdir.'
    expires = _expires_s(holder)
    if not self.wait_s:
      return (
        f'{head}. It runs on another host, container or boot, so only its heartbeat counter shows whether it is '
        f'alive: if that job is gone, pass --lock_wait_s={expires + 2 * self.heartbeat_s:.0f} (more than its expiry '
        f'of {expires:.0f} s) to take the lock over once the counter has stood still that long, or delete '
        f'{self.path}; or use another --workdir.'
      )
    if advanced:
      return f'{head}; its heartbeat counter advanced during the {self.wait_s:g} s waited (--lock_wait_s): it is alive.'
    return (
      f'{head}; its heartbeat counter did not advance during the {self.wait_s:g} s waited (--lock_wait_s), less '
      f'than its expiry of {expires:.0f} s: wait longer, or delete {self.path} if that job is gone.'
    )

  def _beat(self) -> None:
    last_refresh, period = time.monotonic(), self.heartbeat_s
    while not self._stop.wait(period):
      try:
        lost = self._refresh()
      except OSError as e:
        if isinstance(e, FileNotFoundError) and not os.path.exists(self.path):
          lost = f'the lock {self.path} was removed'
        else:
          stale_s, period = time.monotonic() - last_refresh, min(_RETRY_S, self.heartbeat_s)
          if stale_s < self.expires_s / 2 or self.unrefreshed:
            logging.warning('Could not refresh the lock %s (%s); retrying in %.0f s.', self.path, e, period)
            continue
          self.unrefreshed = (
            f'The lock {self.path} could not be refreshed for {stale_s:.1f} s (half its expiry of '
            f'{self.expires_s:g} s; last error: {e})'
          )
          logging.error('%s: stopping this run as if preempted.', self.unrefreshed)
          if self._on_unrefreshed is not None and jax.process_count() == 1:
            self._on_unrefreshed(self.unrefreshed)
          continue
      if lost:
        self.lost = (
          f'{lost}; this run (host {self._me["host"]}, pid {self._me["pid"]}) stops without writing anything more '
          f'into {os.path.dirname(self.path)}.'
        )
        logging.error('%s', self.lost)
        return
      last_refresh, period = time.monotonic(), self.heartbeat_s

  def _refresh(self) -> str | None:
    """Rewrites the lock with the next counter; what happened to it when it is no longer this process's."""
    with self._flock():
      holder = _read_lock(self.path)
      if holder is None:
        return f'the lock {self.path} was removed'
      if not holder:  # no process writes it so (every write is whole): a failed read, retried like a failed write
        raise OSError(f'{self.path} is unreadable')
      if holder.get('id') != self._me['id']:
        return f'the lock {self.path} was taken over by {_describe(holder)}'
      self._me['beat'] += 1
      self._me['heartbeat'] = time.time()
      self._write()
    return None

  def check(self) -> None:
    """Raises LockLost when the lock was taken over or removed: call it before every write into the workdir."""
    if self.lost:
      raise LockLost(self.lost, abandon=True)

  def sync(self) -> None:
    """Multi-host: gives every process process 0's `lost` and `unrefreshed` (a collective: call it at the same
    point on every process); `on_unrefreshed` is then called on every process at once."""
    if jax.process_count() == 1:
      return
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    code = int(multihost_utils.broadcast_one_to_all(np.int32(2 * bool(self.lost) + bool(self.unrefreshed))))
    if code & 2 and not self.lost:
      self.lost = 'process 0 of this job lost the workdir lock (see its log)'
    if code & 1 and self._on_unrefreshed is not None:
      self.unrefreshed = self.unrefreshed or 'process 0 of this job could not refresh the workdir lock (see its log)'
      self._on_unrefreshed(self.unrefreshed)

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._me is None or self.lost:
      return  # another process holds the workdir now: its lock file is not ours to remove
    with contextlib.suppress(OSError), self._flock():
      holder = _read_lock(self.path)
      if holder and holder.get('id') == self._me['id']:
        os.remove(self.path)


@contextlib.contextmanager
def hold(workdir: str, wait_s: float = 0.0, on_unrefreshed=None):
  """Creates `workdir` and holds its lock while the block runs; yields the WorkdirLock. In a multi-host job process
  0 holds it for the job (the others get a lock that is never lost unless `sync` says so), and every process raises
  WorkdirBusyError when process 0 could not take it."""
  os.makedirs(workdir, exist_ok=True)
  lock, error = WorkdirLock(workdir, wait_s=wait_s, on_unrefreshed=on_unrefreshed), ''
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
    yield lock
  finally:
    if jax.process_index() == 0:
      lock.__exit__(None, None, None)


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
