"""Worker interpreters for the CPU-bound steps of preparing a large text corpus: parsing its records, counting the
vocabulary's tokens and encoding the ids, one pool for all three.

`Pool.map(fn, items, *shared)` runs `fn(chunk, *shared)` on consecutive chunks of `items` and yields the results in
order. A small job (fewer than PARALLEL_FROM items) or a one-core machine runs here, in this process; a large one in
worker processes (one per core), started at the first large map and reused by the later ones. `fn` must be a
module-level function; `shared` (e.g. the vocabularies) is sent to each worker once per map, the chunks one at a
time, each worker getting its next chunk when its result has been read.

A pool is passed down explicitly (pipeline opens one, `with Pool() as pool:`, and hands it to the dataset's reader
and to builders.read_texts, which parses a large split's records in its workers); leaving the block closes it.

Workers are fresh interpreters running this module (not multiprocessing, whose spawned children re-run the caller's
main script, and whose forked children would inherit JAX's threads). An exception in a worker is raised here, with
the worker's traceback; a worker that dies (killed, out of memory) is a `WorkerError` naming it, its exit and what
to do, whether it died while working or while its next chunk was being sent.
"""

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
import contextlib
import importlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import traceback
from typing import Any

from s2s_jax import resources

PARALLEL_FROM = 50_000  # items: below this a map runs here (starting workers costs about half a second)
CHUNK = 20_000  # items per worker task


def _send(stream, obj) -> None:
  data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
  stream.write(struct.pack('<Q', len(data)))
  stream.write(data)
  stream.flush()


def _receive(stream):
  """The next object of a stream of _send frames; EOFError at the end."""
  header = stream.read(8)
  if len(header) < 8:
    raise EOFError
  (size,) = struct.unpack('<Q', header)
  data = stream.read(size)
  if len(data) < size:
    raise EOFError
  return pickle.loads(data)


class WorkerError(RuntimeError):
  """A worker's task raised, or a worker died."""


def _exit_status(proc: subprocess.Popen) -> str:
  try:
    code = proc.wait(timeout=10)
  except subprocess.TimeoutExpired:
    return 'stopped answering (its pipe is closed)'
  if code < 0:
    try:
      name = signal.Signals(-code).name
    except ValueError:
      name = f'signal {-code}'
    hint = ' (on Linux often the out-of-memory killer: see `dmesg`)' if -code == signal.SIGKILL else ''
    return f'was killed by {name}{hint}'
  return f'exited with code {code}'


def _died(index: int, count: int, proc: subprocess.Popen, fn: Callable[..., Any]) -> WorkerError:
  return WorkerError(
    f'Data worker {index + 1} of {count} (pid {proc.pid}) {_exit_status(proc)} during a map of {fn.__qualname__}; '
    'its own error, if any, is printed above. Nothing partial was kept: free memory or stop what killed it, and '
    'run the command again.'
  )


class Pool:
  """Up to `size` worker processes (default: one per CPU this process may use, `resources.usable_cpus()`); a context
  manager that closes them."""

  def __init__(self, size: int | None = None):
    self.size = size or resources.usable_cpus()
    self._procs: list[subprocess.Popen] = []

  def __enter__(self) -> 'Pool':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def map(self, fn: Callable[..., Any], items: Sequence, *shared: Any, chunk_size: int | None = None) -> Iterator[Any]:
    """`fn(chunk, *shared)` for each chunk of `chunk_size` (default CHUNK) consecutive items, in order."""
    chunk_size = chunk_size or CHUNK
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    workers = min(self.size, len(chunks))
    if len(items) < PARALLEL_FROM or workers < 2:
      yield from (fn(chunk, *shared) for chunk in chunks)
      return
    if fn.__module__ == '__main__':
      raise ValueError(f'{fn.__qualname__} must be defined in an importable module to run in a worker.')
    self._start(workers)
    task = (fn.__module__, fn.__qualname__, shared)
    done = False

    def send(index: int, frame) -> None:
      try:
        _send(self._procs[index].stdin, frame)
      except (BrokenPipeError, ConnectionResetError):  # the worker is gone
        raise _died(index, workers, self._procs[index], fn) from None

    try:
      for i in range(workers):
        send(i, (task, chunks[i]))
      for i in range(len(chunks)):
        proc = self._procs[i % workers]
        try:
          ok, result = _receive(proc.stdout)
        except EOFError:
          raise _died(i % workers, workers, proc, fn) from None
        if not ok:
          raise WorkerError(f'{fn.__qualname__} failed in a data worker:\n{result}')
        if i + workers < len(chunks):
          send(i % workers, (None, chunks[i + workers]))
        yield result
      done = True
    finally:
      if not done:  # an error, or the caller stopped early: workers may be mid-task, so they are not reused
        self.close(kill=True)

  def _start(self, workers: int) -> None:
    if len(self._procs) >= workers:
      return
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get('PYTHONPATH')])))
    command = [sys.executable, '-m', 's2s_jax.data.workers']
    while len(self._procs) < workers:
      self._procs.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env))

  def close(self, kill: bool = False) -> None:
    """Ends the workers (idle ones exit when their input closes; `kill` for those that may be mid-task)."""
    procs, self._procs = self._procs, []
    for proc in procs:
      if kill:
        proc.kill()
      else:
        with contextlib.suppress(OSError):  # (a dead worker's pipe)
          proc.stdin.close()
    for proc in procs:
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
      for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):  # unsent bytes for a worker that is gone: BrokenPipeError
          stream.close()


def _serve() -> None:
  """A worker: (task, chunk) frames in on stdin, (ok, result or traceback) frames out on stdout, until stdin closes.
  A task is (module, function name, shared arguments), sent with the first chunk of each map (None after it)."""
  out, sys.stdout = sys.stdout.buffer, sys.stderr  # frames only on stdout
  fn, shared = None, ()
  while True:
    try:
      task, chunk = _receive(sys.stdin.buffer)
    except EOFError:
      return
    try:
      if task is not None:
        module, name, shared = task
        fn = importlib.import_module(module)
        for part in name.split('.'):
          fn = getattr(fn, part)
      reply = (True, fn(chunk, *shared))
    except Exception:  # pylint: disable=broad-except
      reply = (False, traceback.format_exc())
    _send(out, reply)


if __name__ == '__main__':
  _serve()
