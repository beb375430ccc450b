"""A small clu-style metric writer: `metrics.jsonl` plus TensorBoard events (tensorboardX), and a progress line.

clu's writers import TensorFlow, which this project does not require; this keeps their interface
(`write_scalars`, `write_texts`, `flush`, `close`). Only process 0 writes files; other processes only log.
"""

import json
import math
import os
import time
from typing import Any

from absl import logging
import jax

from s2s_jax import fileio


class MetricWriter:
  """Appends one flat JSON object per call to `metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, start_time: float | None = None, resume_step: int | None = None, guard=None):
    """With `resume_step`, records of later steps (written before a kill) are dropped, so none is duplicated,
    and `wall_s` goes on from the largest one recorded before: it counts the seconds the run has spent in all its
    starts (up to each start's last record; the time between starts is not counted). `guard` is called before
    every write (it raises to stop them: a run that lost its workdir lock)."""
    self._active = jax.process_index() == 0
    self._guard = guard
    self._start = time.time() if start_time is None else start_time
    self._tb = None
    if self._active:
      path = os.path.join(workdir, 'metrics.jsonl')
      if resume_step is not None:
        self._start -= _truncate_records(path, resume_step)
      self._jsonl = open(path, 'a', encoding='utf-8')
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(
        os.path.join(workdir, 'tensorboard'), flush_secs=30, purge_step=None if resume_step is None else resume_step + 1
      )

  def check(self) -> None:
    """Calls the guard: before a write into the workdir that does not go through this writer."""
    if self._guard is not None:
      self._guard()

  def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
    self.check()
    scalars = {k: float(v) for k, v in scalars.items()}
    logging.info('[%d] %s', step, ', '.join(f'{k}={v:.4g}' for k, v in sorted(scalars.items())))
    if not self._active:
      return
    record = {'step': int(step), 'wall_s': round(time.time() - self._start, 3)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, step)

  def write_texts(self, step: int, texts: dict[str, str]) -> None:
    self.check()
    for k, v in texts.items():
      logging.info('[%d] %s:\n%s', step, k, v)
      if self._tb is not None:
        self._tb.add_text(k, v, step)

  def flush(self) -> None:
    if self._active:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self._active:
      self._jsonl.close()
      self._tb.close()
      self._active = False


def _truncate_records(path: str, last_step: int) -> float:
  """Keeps the records of steps <= last_step, except final test evaluations (they are redone), and drops a torn
  last line; returns the largest wall_s of all records read (0 without any)."""
  if not os.path.exists(path):
    return 0.0
  kept, wall_s = [], 0.0
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record.get('wall_s'), (int, float)):
        wall_s = max(wall_s, float(record['wall_s']))
      if record.get('step', 0) <= last_step and not any(k.startswith('test') for k in record):
        kept.append(line if line.endswith('\n') else line + '\n')
  fileio.write_text(path, ''.join(kept))
  return wall_s


class Progress:
  """A one-line progress report with rate and ETA, printed at log time."""

  def __init__(self, first_step: int, num_steps: int):
    self._first, self._num = first_step, num_steps
    self._t0 = time.time()

  def line(self, step: int, excluded_s: float = 0.0) -> str:
    """`excluded_s`: seconds since the start that were not training (compiles), left out of the rate."""
    elapsed = time.time() - self._t0 - excluded_s
    done = step - self._first
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self._num - step) / rate if rate > 0 else float('nan')
    return f'step {step}/{self._num} ({100.0 * step / self._num:.1f}%), {rate:.2f} steps/s, ETA {eta:.0f} s'
