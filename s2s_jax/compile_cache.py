"""The persistent compilation cache of real runs (`--compilation_cache_dir`) and the compile statistics of a run.

Every entry point calls `enable(dir)` before it compiles anything: every program is cached (no minimum compile time),
in DIR, up to a size cap (least recently used entries go first). Several processes, on one machine or on a shared
filesystem, may use one folder at once:

- JAX 0.10's own file cache writes an entry in place (`Path.write_bytes`: truncate, then write), without a lock
  unless a size cap is set (and a cap needs the `filelock` package, which is not installed here: JAX then refuses to
  start the cache). A process reading the entry while another writes it gets a torn file. With zlib compression (no
  `zstandard` installed) the torn file fails adler32 and JAX warns; with `zstandard` (no frame checksum by default)
  or a torn write that happens to decompress, the bytes reach `deserialize_executable`, which is native code and may
  crash. JAX's key also names no CPU features: an XLA:CPU executable is compiled for the features of the host that
  compiled it (the CPU backend's platform_version is just 'cpu'), so a folder shared by hosts with different CPUs can
  hand one host instructions it lacks (SIGILL). Either is consistent with the segfault in
  compilation_cache.get_executable_and_time that the tests' once-shared cache folder produced (tests/conftest.py).
- Here each entry is written to a temporary file and renamed into place (whole or absent), carries the sha256 of its
  contents (checked before anything is deserialised: a truncated, torn or flipped entry is a miss with a warning and
  is removed, so the next compile writes it again), and its file name adds a digest of this host's CPU features and
  the entry format to JAX's key. What JAX's key already covers (jaxlib version, XLA flags, devices, compile options,
  the program) stays as JAX computes it.

The statistics (`stats()`) come from JAX's monitoring events: programs compiled or loaded from the cache, the ones
loaded from the cache, and the seconds spent in XLA compilation (including loading from the cache).
"""

import contextlib
import fcntl
import hashlib
import os
import platform
import threading
from typing import Any

from absl import logging
import jax
from jax._src import compilation_cache as jax_compilation_cache  # pylint: disable=g-bad-import-order
from jax._src import compilation_cache_interface  # pylint: disable=g-bad-import-order

from s2s_jax import fileio

MAX_BYTES = 4 << 30  # the size cap of the folder (env S2S_COMPILATION_CACHE_MAX_BYTES overrides it)
_MAGIC = b's2s_jax-jit-cache-v1\n'
_SUFFIX = '.xla'
FLAG_HELP = (
  'Persistent compilation cache: compiled programs are saved here and reused by later runs of the same shapes (also '
  'by other processes at once). Default $JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/s2s_jax/jit (~/.cache/...); '
  'capped at 4 GiB (env S2S_COMPILATION_CACHE_MAX_BYTES); an empty value turns it off.'
)


def default_dir() -> str:
  """$JAX_COMPILATION_CACHE_DIR when set (the tests' per-session cache reaches their subprocesses so), else
  $XDG_CACHE_HOME/s2s_jax/jit, else ~/.cache/s2s_jax/jit."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 's2s_jax', 'jit')


def host_salt() -> str:
  """A digest of what an XLA:CPU executable depends on beyond JAX's key: the machine, the CPU's model and feature
  flags (Linux /proc/cpuinfo), and this entry format."""
  parts = [_MAGIC.decode(), platform.machine(), platform.system()]
  with contextlib.suppress(OSError):
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      seen = set()
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('vendor_id', 'cpu family', 'model', 'flags', 'Features', 'CPU implementer', 'CPU part'):
          if key not in seen:  # the first processor's (all are alike on the machines JAX supports)
            seen.add(key)
            parts.append(f'{key}={" ".join(sorted(value.split()))}')
  return hashlib.sha256('\n'.join(parts).encode()).hexdigest()[:16]


class SafeCache(compilation_cache_interface.CacheInterface):
  """JAX's CacheInterface over a folder: atomic writes, checksummed entries, an LRU size cap (see the module doc)."""

  def __init__(self, path: str, max_bytes: int):
    self._path = path
    self.path = path
    self.max_bytes = max_bytes
    self.salt = host_salt()
    self.damaged = 0  # entries found damaged (and removed) by this process
    os.makedirs(path, exist_ok=True)

  def _file(self, key: str) -> str:
    return os.path.join(self._path, f'{key}-{self.salt}{_SUFFIX}')

  def get(self, key: str) -> bytes | None:
    path = self._file(key)
    try:
      with open(path, 'rb') as f:
        raw = f.read()
    except FileNotFoundError:
      return None
    except OSError as e:
      logging.warning('Compilation cache: cannot read %s (%s); compiling instead.', path, e)
      return None
    header = len(_MAGIC) + 32
    value = raw[header:]
    if len(raw) < header or raw[: len(_MAGIC)] != _MAGIC or hashlib.sha256(value).digest() != raw[len(_MAGIC) : header]:
      self.damaged += 1
      logging.warning('Compilation cache: %s is damaged (truncated or changed); removed, compiling instead.', path)
      with contextlib.suppress(OSError):
        os.remove(path)
      return None
    with contextlib.suppress(OSError):
      os.utime(path)  # the last use, for the LRU cap
    return value

  def put(self, key: str, value: bytes) -> None:
    path = self._file(key)
    if os.path.exists(path):
      return
    size = len(_MAGIC) + 32 + len(value)
    if size > self.max_bytes:
      logging.warning('Compilation cache: an entry of %d bytes exceeds the cap of %d; not saved.', size, self.max_bytes)
      return
    self._evict(size)
    with fileio.replacing(path, binary=True) as f:
      f.write(_MAGIC + hashlib.sha256(value).digest() + value)

  def _evict(self, incoming: int) -> None:
    """Removes the least recently used entries until `incoming` more bytes fit under the cap (one process at a
    time: an flock on DIR/.evict.lock; a reader holding a removed file still reads it whole)."""
    with open(os.path.join(self._path, '.evict.lock'), 'a', encoding='utf-8') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      entries = []
      with os.scandir(self._path) as it:
        for e in it:
          if e.name.endswith(_SUFFIX):
            with contextlib.suppress(OSError):
              st = e.stat()
              entries.append((st.st_mtime, st.st_size, e.path))
      total = sum(size for _, size, _ in entries)
      for _, size, path in sorted(entries):
        if total + incoming <= self.max_bytes:
          break
        with contextlib.suppress(OSError):
          os.remove(path)
        total -= size

  def clear(self) -> None:  # (CacheInterface; JAX never calls it)
    pass


class _Stats:
  """Counts from JAX's monitoring events, from the first `enable` on (listeners cannot be removed one by one)."""

  def __init__(self):
    self.lock = threading.Lock()
    self.registered = False
    self.reset()

  def reset(self):
    self.requests, self.hits, self.programs, self.compile_s = 0, 0, 0, 0.0

  def on_event(self, event: str, **kwargs) -> None:
    del kwargs
    with self.lock:
      if event == '/jax/compilation_cache/compile_requests_use_cache':
        self.requests += 1
      elif event == '/jax/compilation_cache/cache_hits':
        self.hits += 1

  def on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
    del kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      with self.lock:
        self.programs += 1
        self.compile_s += duration_secs


_STATS = _Stats()
_ACTIVE: dict[str, Any] = {'dir': None, 'cache': None}


def count_compiles() -> None:
  """Starts counting compiles in this process (once; `enable` does it too)."""
  if not _STATS.registered:
    jax.monitoring.register_event_listener(_STATS.on_event)
    jax.monitoring.register_event_duration_secs_listener(_STATS.on_duration)
    _STATS.registered = True


def enable(path: str | None, max_bytes: int | None = None) -> str | None:
  """Uses the folder `path` as the persistent compilation cache of this process (created when missing), or none when
  `path` is empty or None; starts counting compiles (`stats`). Call it before anything is compiled. Returns the
  absolute folder, or None."""
  count_compiles()
  jax_compilation_cache.reset_cache()
  if not path:
    jax.config.update('jax_enable_compilation_cache', False)
    _ACTIVE.update(dir=None, cache=None)
    logging.info('Persistent compilation cache: off.')
    return None
  path = os.path.abspath(os.path.expanduser(path))
  if max_bytes is None:
    max_bytes = int(os.environ.get('S2S_COMPILATION_CACHE_MAX_BYTES', MAX_BYTES))
  cache = SafeCache(path, max_bytes)
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  # JAX builds its own file cache on the first compile unless one is in place; ours takes its place.
  jax_compilation_cache._cache = cache  # pylint: disable=protected-access
  jax_compilation_cache._cache_initialized = True  # pylint: disable=protected-access
  _ACTIVE.update(dir=path, cache=cache)
  logging.info('Persistent compilation cache: %s (cap %.1f GiB).', path, max_bytes / (1 << 30))
  return path


def stats(since: dict[str, Any] | None = None) -> dict[str, Any]:
  """What this process compiled since `count_compiles` (or since the `stats()` given): `programs` (XLA
  compilations, each either compiled or loaded from the cache), `from_cache`, `compiled` (= programs - from_cache),
  `compile_s` (seconds in XLA compilation, loading from the cache included), `damaged_entries`, `cache_dir` (None:
  off)."""
  cache = _ACTIVE['cache']
  with _STATS.lock:
    out = {
      'programs': _STATS.programs,
      'from_cache': _STATS.hits,
      'compile_s': _STATS.compile_s,
      'damaged_entries': cache.damaged if cache is not None else 0,
    }
  if since:
    out = {k: v - since[k] for k, v in out.items()}
  out['compiled'] = out['programs'] - out['from_cache']
  out['compile_s'] = round(out['compile_s'], 3)
  out['cache_dir'] = _ACTIVE['dir']
  return out


def summary(s: dict[str, Any] | None = None) -> str:
  s = stats() if s is None else s
  where = f'cache {s["cache_dir"]}' if s['cache_dir'] else 'persistent cache off'
  return (
    f'{s["programs"]} programs, {s["from_cache"]} from the compilation cache, {s["compiled"]} compiled, '
    f'{s["compile_s"]:.1f} s in XLA compilation ({where})'
  )
