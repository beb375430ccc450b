"""Preemption: SIGTERM or SIGINT asks the training loop to checkpoint the current step and stop; a second signal
exits at once.

Clusters (SLURM, Kubernetes, spot VMs) send SIGTERM before killing a job; Ctrl-C sends SIGINT. The handler only
sets a flag, which the loop reads after each step, so the checkpoint is written from the main thread with a
consistent state.
"""
import os
import signal
import threading

from absl import logging

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preemption:
  """A context manager that turns the first SIGTERM/SIGINT into `requested` and the second into an exit."""

  def __init__(self):
    self.requested = False
    self.signal_name = ''
    self._previous = {}

  def __enter__(self) -> 'Preemption':
    if threading.current_thread() is threading.main_thread():  # handlers can only be set from the main thread
      for sig in _SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.requested:
      logging.error('Second signal (%s): exiting at once without a checkpoint.', name)
      os._exit(128 + signum)  # pylint: disable=protected-access
    self.requested, self.signal_name = True, name
    logging.warning('%s received: checkpointing after the current step, then stopping (send it again to exit at '
                    'once).', name)
