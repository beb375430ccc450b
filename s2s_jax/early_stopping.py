"""Early stopping (config.eval.patience = N > 0): a run stops once every seed has validated N times since its best
validation.

Counted from the validations that happened (each seed's metrics.jsonl up to the restored step, then this start's),
so changing eval_every_steps on resume changes nothing already done; the best step of each seed is the one its
best/ holds, then the step of each better validation.
"""

import json
import os

from s2s_jax import checkpointing


class EarlyStopping:
  """Each seed's validation steps and best step; `reached()` says whether patience ran out for all of them."""

  def __init__(self, patience: int, dirs: list[str], first_step: int):
    """`dirs`: the seeds' workdirs (seeds.run_dirs); `first_step`: the restored step (later records are dropped)."""
    self.patience = patience
    self._best = [_best_step_on_disk(d) for d in dirs]
    self._validations = [_validation_steps(d, first_step) for d in dirs]

  def record(self, k: int, step: int, improved: bool) -> None:
    """Seed k validated at `step`; `improved`: its score was better than its best (saved to its best/)."""
    self._validations[k].append(step)
    if improved:
      self._best[k] = step

  def reached(self) -> bool:
    """Every seed has validated `patience` times since its best validation (never without patience or a best)."""
    if not self.patience or any(b is None for b in self._best):
      return False
    return all(sum(v > best for v in steps) >= self.patience for best, steps in zip(self._best, self._validations))


def _best_step_on_disk(folder: str) -> int | None:
  """The step in `folder`'s best/ (it keeps one), or None."""
  steps = [s for s, _, _ in checkpointing.saved_steps(folder, params_only=True)]
  return max(steps) if steps else None


def _validation_steps(folder: str, up_to: int) -> list[int]:
  """The steps <= up_to at which `folder`'s run validated (its eval/* records in metrics.jsonl)."""
  steps = set()
  try:
    with open(os.path.join(folder, 'metrics.jsonl'), encoding='utf-8') as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue  # a line torn by a kill
        step = record.get('step') if isinstance(record, dict) else None
        if isinstance(step, int) and step <= up_to and any(k.startswith('eval/') for k in record):
          steps.add(step)
  except OSError:
    pass
  return sorted(steps)
