"""One run per workdir: `DIR/lock.json`, its heartbeat, and what a run does when it loses the lock.

`hold(workdir)` is what main uses (WorkdirLock explains the rules); `lock_holder(workdir)` tells drivers (sweep,
tune) whether a workdir is held by a live run.
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
from typing import Any
import uuid

from absl import logging
import jax
import numpy as np
import psutil

from s2s_jax import fileio
from s2s_jax import slurm


def _write_json(path: str, obj: Any) -> None:
  fileio.write_json(path, obj, indent=2, sort_keys=True, ensure_ascii=False)


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


def namespace() -> dict[str, Any]:
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
    **namespace(),
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
  mine = namespace()
  return (
    holder.get('host') == socket.gethostname()
    and 'pid_ns' in holder
    and all(holder.get(k) == v for k, v in mine.items())
  )


def dead_reason(holder: dict[str, Any], where: str = '') -> str | None:
  """Why a holder whose pid is comparable (pid_is_local) is gone (None: it is alive): no such pid, or the pid now
  belongs to a process started at another time. `where` follows the pid in the message (e.g. ' on HOST')."""
  try:
    started = psutil.Process(int(holder['pid'])).create_time()
  except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
    return f'process {holder.get("pid")}{where} is gone'
  if abs(started - float(holder.get('start_time') or 0)) > 1.0:
    return f'pid {holder["pid"]}{where} now belongs to another process'
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
    return None if dead_reason(holder) else holder
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
      return dead_reason(holder)
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
