"""Several scripts/tune.py drivers sharing one Optuna study (in PostgreSQL, say, from machines that share no disk):
which driver owns a running trial, when that driver is gone, and how the study's trials count towards --trials.

Ownership. A driver writes its record (the trial user attribute DRIVER: host, pid, process start time, pid namespace,
boot id, root folder, a random id, a heartbeat counter and its expiry) on every trial it runs, at every poll. Another
driver judges a running trial's owner gone when the owner is a process of this host (same host name, pid namespace
and boot) that is no longer alive, or when the owner's heartbeat counter stood still for the owner's expiry
(EXPIRES_S, or S2S_TUNE_EXPIRES_S), timed on the judging driver's own clock: two hosts' clocks are never compared. A
running trial with no record (asked by older code, or an instant ago) is gone once it has shown none for that long.

Slots. A trial whose driver is gone is resumed as a new trial that names it (RESUMES): the old trial is failed first,
which only one driver can do (the storage finishes a trial once), so exactly one driver resumes it. The trials that
continue one another form a slot, named by the first trial's number; the slot's current trial is its latest. The
study counts slots: finished (the current trial complete, pruned or failed) and in flight (running or waiting), so a
resumed trial is counted once. A trial asked beyond --trials (two drivers asking at once for the last place) is
withdrawn (SURPLUS, failed) and not counted: the storage numbers trials in order, under a lock of the study, so a
driver that checks the rank of its new trial's slot right after asking sees every earlier trial.
"""

import dataclasses
import os
import socket
import time
from typing import Any
import uuid

import optuna
import psutil

from s2s_jax import workdir_lock

DRIVER = 'driver'  # user attribute: the record of the driver that runs the trial
RESUMES = 'resumes_trial'  # user attribute: the number of the slot (its first trial) a resumed trial continues
SURPLUS = 'surplus'  # user attribute: a trial withdrawn because the study already had --trials trials
EXPIRES_S = 300.0  # a driver whose heartbeat counter stands still this long is gone


def expires_s() -> float:
  """This driver's expiry: S2S_TUNE_EXPIRES_S (seconds) when set, else EXPIRES_S."""
  value = os.environ.get('S2S_TUNE_EXPIRES_S', '')
  try:
    return float(value) if value else EXPIRES_S
  except ValueError:
    raise ValueError(f'S2S_TUNE_EXPIRES_S={value!r} is not a number of seconds.') from None


def namespace() -> dict[str, Any]:
  """Where a pid means something: the host name, the pid namespace (its inode) and the boot, as the workdir lock
  records them (workdir_lock.namespace), so a driver can judge a run's lock holder as well as another driver."""
  return {'host': socket.gethostname(), **workdir_lock.namespace()}


def driver_record(root: str, poll_s: float) -> dict[str, Any]:
  """This driver's record, with its heartbeat counter at 0. Its expiry is at least 10 polls."""
  return {
    'id': uuid.uuid4().hex[:12],
    **namespace(),
    'pid': os.getpid(),
    'start_time': psutil.Process().create_time(),
    'root': root,
    'beat': 0,
    'heartbeat': time.time(),  # for people reading the study; no other host compares it with its clock
    'expires_s': max(expires_s(), 10 * poll_s),
  }


def pid_is_local(record: dict[str, Any]) -> bool:
  """Whether the record's pid can be looked up here: same host name, pid namespace and boot (two containers may share
  a host name but not their processes). A record without them (older code) is trusted on its host name alone."""
  mine = namespace()
  return record.get('host') == mine['host'] and all(
    record.get(key) == mine[key] for key in ('pid_ns', 'boot_id') if record.get(key) is not None
  )


def dead_reason(record: dict[str, Any]) -> str | None:
  """Why the process a local record names is gone (None: it is alive), as the workdir lock judges its holder."""
  return workdir_lock.dead_reason(record, where=f' on {record.get("host")}')


def describe(record: dict[str, Any] | None) -> str:
  if not record:
    return 'no recorded driver'
  return f'driver {record.get("id")} (host {record.get("host")}, pid {record.get("pid")}, root {record.get("root")})'


def slot(trial: optuna.trial.FrozenTrial) -> int:
  return int(trial.user_attrs.get(RESUMES, trial.number))


@dataclasses.dataclass
class Tally:
  """The study's trials by slot (each slot's trials in number order: the last is the current one)."""

  slots: dict[int, list[optuna.trial.FrozenTrial]]
  counted: list[int]  # the slots that count towards --trials (not withdrawn), in order

  @property
  def finished(self) -> int:
    return sum(self.current(s).state.is_finished() for s in self.counted)

  @property
  def in_flight(self) -> int:
    return sum(not self.current(s).state.is_finished() for s in self.counted)

  @property
  def waiting(self) -> int:
    return sum(self.current(s).state == optuna.trial.TrialState.WAITING for s in self.counted)

  def current(self, s: int) -> optuna.trial.FrozenTrial:
    return self.slots[s][-1]

  def rank(self, s: int) -> int:
    """How many counted slots come before slot s (a slot of rank >= --trials is beyond the study's size)."""
    return sum(other < s for other in self.counted)

  def is_current(self, trial: optuna.trial.FrozenTrial) -> bool:
    return self.current(slot(trial)).number == trial.number


def tally(trials: list[optuna.trial.FrozenTrial]) -> Tally:
  slots: dict[int, list[optuna.trial.FrozenTrial]] = {}
  for t in sorted(trials, key=lambda t: t.number):
    slots.setdefault(slot(t), []).append(t)
  counted = sorted(s for s, ts in slots.items() if not any(t.user_attrs.get(SURPLUS) for t in ts))
  return Tally(slots, counted)


class OwnerWatch:
  """Judges whether the drivers of other drivers' running trials are gone; remembers when it first saw each one's
  heartbeat counter at its present value (on this process's monotonic clock)."""

  def __init__(self, me: dict[str, Any]):
    self.me = me
    self._seen: dict[int, tuple[Any, float]] = {}

  def gone(self, trial: optuna.trial.FrozenTrial, now: float | None = None) -> str | None:
    """Why the trial's driver is gone, or None while it is (or may be) alive."""
    now = time.monotonic() if now is None else now
    record = trial.user_attrs.get(DRIVER)
    if record and record.get('id') == self.me['id']:
      return None
    if record and pid_is_local(record):
      reason = dead_reason(record)
      return f'its {describe(record)}: {reason}' if reason else None
    observed = (record.get('id'), record.get('beat')) if record else None
    seen = self._seen.get(trial.number)
    if seen is None or seen[0] != observed:
      self._seen[trial.number] = (observed, now)
      return None
    expiry = float((record or {}).get('expires_s') or self.me['expires_s'])
    if now - seen[1] <= expiry:
      return None
    if record:
      return f'its {describe(record)} wrote no heartbeat for {now - seen[1]:.0f} s (its expiry: {expiry:.0f} s)'
    return f'no driver was recorded on it for {now - seen[1]:.0f} s (expiry: {expiry:.0f} s)'
