"""s2s_jax/shared_study.py: how drivers sharing a study count its trials and judge each other's trials (no services:
an in-memory Optuna study; tests/tune_cluster_test.py runs the drivers themselves on PostgreSQL)."""

import os
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import optuna

from s2s_jax import shared_study

_RUNNING, _FAIL = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
_COMPLETE, _WAITING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.WAITING


def _trial(number: int, state, **user_attrs) -> optuna.trial.FrozenTrial:
  trial = optuna.trial.create_trial(state=state, value=1.0 if state == _COMPLETE else None, user_attrs=user_attrs)
  trial.number = number
  return trial


def _record(**fields):
  return {'id': 'x', 'host': 'elsewhere', 'pid': 1, 'start_time': 0.0, 'beat': 0, 'expires_s': 60.0, **fields}


class TallyTest(absltest.TestCase):
  def test_a_resumed_trial_counts_once_and_a_withdrawn_one_not_at_all(self):
    trials = [
      _trial(0, _COMPLETE),
      _trial(1, _FAIL),  # its driver died: failed, and resumed by trial 3
      _trial(2, _FAIL, surplus=True),  # asked beyond --trials
      _trial(3, _COMPLETE, resumes_trial=1),
      _trial(4, _RUNNING),
      _trial(5, _WAITING, resumes_trial=4),  # older code's resume, waiting to be asked
      _trial(6, _FAIL),  # a run that failed: finished, and counted
    ]
    tally = shared_study.tally(trials)
    self.assertEqual(tally.counted, [0, 1, 4, 6])
    self.assertEqual((tally.finished, tally.in_flight, tally.waiting), (3, 1, 1))
    self.assertEqual(tally.current(1).number, 3)
    self.assertFalse(tally.is_current(trials[1]))
    self.assertEqual([tally.rank(s) for s in (0, 1, 4, 6, 7)], [0, 1, 2, 3, 4])
    self.assertEqual(tally.rank(2), 2)  # (a withdrawn slot ranks behind the counted ones before it)


class OwnerWatchTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.watch = shared_study.OwnerWatch(shared_study.driver_record('/root', poll_s=1.0))

  def test_a_driver_of_another_host_is_gone_once_its_counter_stood_still_for_its_expiry(self):
    trial = _trial(0, _RUNNING, driver=_record(beat=7))
    self.assertIsNone(self.watch.gone(trial, now=1000.0))  # first seen: timed from now, whatever its clock says
    self.assertIsNone(self.watch.gone(trial, now=1059.0))
    self.assertIn('wrote no heartbeat for 61 s', self.watch.gone(trial, now=1061.0))
    advanced = _trial(0, _RUNNING, driver=_record(beat=8))
    self.assertIsNone(self.watch.gone(advanced, now=1062.0))  # it advanced: alive, timed again from here
    self.assertIsNone(self.watch.gone(advanced, now=1121.0))
    self.assertIsNotNone(self.watch.gone(advanced, now=1123.0))

  def test_a_dead_driver_of_this_host_is_gone_at_once_and_a_live_one_never(self):
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    here = shared_study.namespace()
    dead = _trial(0, _RUNNING, driver=_record(**here, pid=child.pid, start_time=1.0))
    self.assertIn(f'process {child.pid} on {here["host"]} is gone', self.watch.gone(dead, now=0.0))
    alive = dict(shared_study.driver_record('/other', poll_s=1.0), id='y')  # (this process, another driver's id)
    self.assertIsNone(self.watch.gone(_trial(1, _RUNNING, driver=alive), now=0.0))
    self.assertIsNone(self.watch.gone(_trial(1, _RUNNING, driver=alive), now=1e9))
    reused = dict(alive, start_time=alive['start_time'] - 100)  # the pid now belongs to another process
    self.assertIn('now belongs to another process', self.watch.gone(_trial(2, _RUNNING, driver=reused), now=0.0))

  def test_a_same_named_host_in_another_pid_namespace_is_judged_by_its_counter(self):
    other = _record(**dict(shared_study.namespace(), pid_ns='pid:[1]'), pid=os.getpid() + 10**6)
    self.assertIsNone(self.watch.gone(_trial(0, _RUNNING, driver=other), now=0.0))  # (its pid means nothing here)

  def test_this_drivers_own_trial_is_never_gone_and_one_without_a_record_waits_the_expiry(self):
    own = _trial(0, _RUNNING, driver=self.watch.me)
    self.assertIsNone(self.watch.gone(own, now=1e9))
    bare = _trial(1, _RUNNING)  # asked by older code (or a moment ago)
    expiry = self.watch.me['expires_s']
    self.assertIsNone(self.watch.gone(bare, now=0.0))
    self.assertIsNone(self.watch.gone(bare, now=expiry))
    self.assertIn('no driver was recorded', self.watch.gone(bare, now=expiry + 1))

  def test_the_expiry_comes_from_the_environment_and_is_at_least_ten_polls(self):
    with mock.patch.dict(os.environ, {'S2S_TUNE_EXPIRES_S': '12'}):
      self.assertEqual(shared_study.driver_record('/r', poll_s=0.5)['expires_s'], 12.0)
      self.assertEqual(shared_study.driver_record('/r', poll_s=5.0)['expires_s'], 50.0)
    with mock.patch.dict(os.environ, {'S2S_TUNE_EXPIRES_S': 'soon'}):
      with self.assertRaisesRegex(ValueError, 'S2S_TUNE_EXPIRES_S'):
        shared_study.expires_s()


if __name__ == '__main__':
  absltest.main()
