"""Preemption: SIGTERM or SIGINT stops a run cleanly at any stage; a second signal exits at once.

Clusters (SLURM, Kubernetes, spot VMs) send SIGTERM before killing a job; Ctrl-C sends SIGINT. The handler only
sets a flag, which the code reads where stopping loses nothing: after each training step (the loop then writes a
checkpoint of the current step), between the stages of a run (`check`) and between the batches of the final test
decoding. Inside `immediate()` (data preparation, which can run for minutes) the signal interrupts at once with
`Preempted`; the preparation's temporary folders are removed on the way out. `request` stops a run the same way from
any thread (the workdir lock does when it cannot be refreshed).

A process that cannot signal the run (a search driver on another host, or one whose runs are SLURM jobs) asks it to
stop by writing `DIR/STOP` (STOP_FILE) in its workdir: the training loop reads it at each validation
(`read_stop_file`) and stops as on a first signal, with a checkpoint and without DONE; the file is consumed.
"""

import _thread
import contextlib
import os
import signal
import threading

from absl import logging
import jax
import numpy as np

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_FILE = 'STOP'  # in a run's workdir: stop at the next validation (written by scripts/tune.py to prune a trial)


class Preempted(BaseException):
  """Raised to stop a run cleanly (a BaseException, so no `except Exception` on the way swallows it)."""


class Preemption:
  """A context manager that turns the first SIGTERM/SIGINT into `requested` and the second into an exit; with a
  `workdir`, read_stop_file() looks for its STOP file."""

  def __init__(self, workdir: str | None = None):
    self.requested = False
    self._stop_file = None if workdir is None else os.path.join(workdir, STOP_FILE)
    self.signal_name = ''
    self._previous = {}
    self._immediate = False
    self._reason = ''

  def __enter__(self) -> 'Preemption':
    if threading.current_thread() is threading.main_thread():  # handlers can only be set from the main thread
      for sig in _SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def check(self, stage: str) -> None:
    """Raises Preempted if a signal came, naming the stage that was completed or abandoned."""
    if self.requested:
      raise Preempted(f'{self.signal_name}: stopped {stage}; nothing is lost. Run the same command to continue.')

  def read_stop_file(self) -> None:
    """Turns a stop file (see STOP_FILE) into `requested`, as a first signal would, and removes it. Every process of
    a multi-host run reads process 0's answer, so all of them stop at the same step."""
    if self._stop_file is None or self.requested:
      return
    found = jax.process_index() == 0 and os.path.exists(self._stop_file)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      found = bool(multihost_utils.broadcast_one_to_all(np.int32(found)))
    if not found:
      return
    reason = ''
    if jax.process_index() == 0:
      with contextlib.suppress(OSError):
        with open(self._stop_file, encoding='utf-8', errors='replace') as f:
          reason = f.read().strip()
        os.remove(self._stop_file)
    self.requested, self.signal_name = True, f'{os.path.basename(self._stop_file)} file'
    logging.warning(
      '%s found%s: stopping after this step, with a checkpoint.', self._stop_file, f' ({reason})' if reason else ''
    )

  @contextlib.contextmanager
  def immediate(self, stage: str):
    """Within this block a signal raises Preempted at once (and one that came before, on entry)."""
    self.check(stage)
    self._immediate, self._stage = True, stage
    try:
      yield
    finally:
      self._immediate = False

  def request(self, reason: str) -> None:
    """Stops the run as a first signal would, naming `reason` instead of a signal; callable from any thread."""
    if self.requested:
      return
    if self._previous and threading.current_thread() is not threading.main_thread():
      self._reason = reason
      _thread.interrupt_main(_SIGNALS[0])  # runs _handle in the main thread, which can raise Preempted there
    else:
      self.requested, self.signal_name = True, reason

  def _handle(self, signum, frame) -> None:
    del frame
    name, reason, self._reason = signal.Signals(signum).name, self._reason, ''
    if reason:
      if self.requested:
        return  # a signal came first: the run is stopping already
      name = reason
    if self.requested:
      logging.error('Second signal (%s): exiting at once without a checkpoint.', name)
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.requested, self.signal_name = True, name
    if self._immediate:
      self._immediate = False
      self.check(self._stage)
    logging.warning(
      '%s: stopping at the next point where nothing is lost (after the current training step, with a checkpoint; '
      'send SIGTERM or SIGINT to exit at once).',
      name if reason else f'{name} received',
    )
