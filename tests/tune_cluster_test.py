"""scripts/tune.py drivers sharing one Optuna study in the local cluster's PostgreSQL, and a search through SLURM.

Cluster tier only (`python -m pytest -m cluster tests`). "Another machine" is a driver in its own mount and UTS
namespaces (`unshare`, as root): another host name, and the first driver's root hidden under an empty tmpfs, so the
two drivers share nothing but the database.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
import testutil

from s2s_jax import shared_study

pytestmark = pytest.mark.cluster
_TUNE = os.path.join(testutil.ROOT, 'scripts', 'tune.py')
_SMOKE = 'experiments/search/smoke.py'


@pytest.fixture(autouse=True)
def _delete_studies(local_cluster, tmp_path):
  """The studies a test made (those its roots' study.json name) are deleted after it: the database is shared."""
  yield
  for name in {json.loads(p.read_text())['study_name'] for p in tmp_path.glob('**/study.json')}:
    with contextlib.suppress(KeyError):
      optuna.delete_study(study_name=name, storage=local_cluster['S2S_CLUSTER_PG_URL'])


def _env(tmp_path, **extra) -> dict[str, str]:
  return testutil.env(S2S_CACHE_DIR=str(tmp_path / 'cache'), **extra)


class _Driver:
  """A driver process whose output goes to files (the local jobs it starts inherit its stdout and stderr, and may
  outlive it: a pipe would stay open)."""

  def __init__(self, cmd: list[str], env: dict[str, str], folder):
    tag = uuid.uuid4().hex[:6]
    self.out_path, self.err_path = folder / f'driver-{tag}.out', folder / f'driver-{tag}.err'
    with open(self.out_path, 'w') as out, open(self.err_path, 'w') as err:
      self.process = subprocess.Popen(cmd, cwd=testutil.ROOT, env=env, stdout=out, stderr=err, text=True)

  def output(self) -> tuple[str, str]:
    return self.out_path.read_text(), self.err_path.read_text()

  def wait(self, timeout: float) -> tuple[str, str]:
    try:
      self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
      out, err = self.output()
      raise AssertionError(f'driver still running after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}') from None
    return self.output()


def _start(tmp_path, *flags: str, hide: str | None = None, **extra) -> _Driver:
  """A driver; with `hide`, on "another machine": host name 'elsewhere', the folder `hide` invisible."""
  cmd = [sys.executable, _TUNE, *flags]
  if hide:
    if os.geteuid() != 0 or not shutil.which('unshare'):
      pytest.skip('a driver on "another machine" needs root and unshare (as the cluster tier has)')
    inner = f'hostname elsewhere && mount -t tmpfs none {hide} && exec "$@"'
    cmd = ['unshare', '--mount', '--uts', 'sh', '-c', inner, 'sh', *cmd]
  return _Driver(cmd, _env(tmp_path, **extra), tmp_path)


def _finish(driver: _Driver, timeout: float = 420) -> tuple[str, str]:
  out, err = driver.wait(timeout)
  assert driver.process.returncode == 0, f'driver failed ({driver.process.returncode}):\n{out[-3000:]}\n{err[-5000:]}'
  assert 'Traceback' not in err, err[-5000:]
  return out, err


def _refused(driver: _Driver, timeout: float = 300) -> str:
  _, err = driver.wait(timeout)
  assert driver.process.returncode == 1, err[-3000:]
  return err


def _study(url: str, name: str) -> optuna.Study:
  return optuna.load_study(study_name=name, storage=url)


def _search_file(tmp_path, name: str, metric: str, direction: str, body: str = '') -> str:
  path = tmp_path / f'{name}.py'
  path.write_text(
    f"CONFIG = 'experiments/default.py'\nCONFIG_ARG = 'size=tiny'\nMETRIC = {metric!r}\nDIRECTION = {direction!r}\n"
    + (body or "def suggest(trial, arg=None):\n  return {'num_train_steps': 40, 'eval_every_steps': 10}\n")
  )
  return str(path)


def test_two_drivers_on_two_machines_share_one_study(local_cluster, tmp_path):
  """Each driver leaves the other's running trials alone (today the second marked the first's FAIL and the first
  crashed at its next poll); together they run exactly --trials trials, each once."""
  url, name = local_cluster['S2S_CLUSTER_PG_URL'], f'two-drivers-{uuid.uuid4().hex[:8]}'
  flags = [f'--space={_SMOKE}', '--trials=4', f'--storage={url}', f'--study_name={name}', '--poll_seconds=1']
  (tmp_path / 'A').mkdir()
  first = _start(tmp_path, *flags, f'--root={tmp_path / "A" / "search"}')
  deadline = time.time() + 240
  while not any(t.state == optuna.trial.TrialState.RUNNING for t in _trials_if_any(url, name)):
    assert time.time() < deadline and first.process.poll() is None, first.output()
    time.sleep(1)
  second = _start(tmp_path, *flags, f'--root={tmp_path / "B" / "search"}', hide=str(tmp_path / 'A'))
  out_first, _ = _finish(first)
  out_second, _ = _finish(second)
  trials = _study(url, name).get_trials()
  tally = shared_study.tally(trials)
  assert tally.finished == 4 and len(tally.counted) == 4, [(t.number, t.state.name, t.user_attrs) for t in trials]
  assert not any(shared_study.RESUMES in t.user_attrs for t in trials)  # nobody's trial was taken from them
  assert all(t.state.is_finished() for t in trials)
  hosts = {t.user_attrs[shared_study.DRIVER]['host'] for t in trials if not t.user_attrs.get(shared_study.SURPLUS)}
  assert hosts == {os.uname().nodename, 'elsewhere'}, (out_first, out_second)
  assert not (tmp_path / 'B' / 'search' / 'trial_0').exists()  # trial 0 (START) ran on the first machine only
  assert (tmp_path / 'A' / 'search' / 'trial_0' / 'DONE').exists()


def test_a_silent_drivers_trial_is_taken_over_by_another_machine_after_its_expiry(local_cluster, tmp_path):
  """The first driver is frozen (SIGSTOP) while its trial 0 trains; the driver on another machine cannot see its
  process, so it waits until its heartbeat counter has stood still for its expiry (10 s here), then resumes trial 0
  in its own root (the old workdir is not reachable from there), from the start. Thawed, the first driver finds
  trial 0 failed by another driver: no longer its own, not a crash (before: UpdateFinishedTrialError)."""
  url, name = local_cluster['S2S_CLUSTER_PG_URL'], f'takeover-{uuid.uuid4().hex[:8]}'
  flags = [f'--space={_SMOKE}', '--trials=2', f'--storage={url}', f'--study_name={name}', '--poll_seconds=1']
  flags.append('--pruner=none')
  (tmp_path / 'A').mkdir()
  first = _start(tmp_path, *flags, f'--root={tmp_path / "A" / "search"}', S2S_TUNE_EXPIRES_S='10')
  metrics, deadline = tmp_path / 'A' / 'search' / 'trial_0' / 'metrics.jsonl', time.time() + 300
  second = None
  while not (metrics.exists() and 'eval/loss' in metrics.read_text()):
    assert time.time() < deadline and first.process.poll() is None, first.output()
    if second is None and any(t.state == optuna.trial.TrialState.RUNNING for t in _trials_if_any(url, name)):
      second = _start(
        tmp_path, *flags, f'--root={tmp_path / "B" / "search"}', hide=str(tmp_path / 'A'), S2S_TUNE_EXPIRES_S='10'
      )
    time.sleep(0.2)
  assert second is not None
  first.process.send_signal(signal.SIGSTOP)
  deadline = time.time() + 240
  while 'resumes trial 0' not in second.output()[0]:
    assert time.time() < deadline and second.process.poll() is None, second.output()
    time.sleep(0.5)
  first.process.send_signal(signal.SIGCONT)
  out_second, _ = _finish(second)
  out_first, _ = _finish(first)
  trials = _study(url, name).get_trials()
  tally = shared_study.tally(trials)
  assert tally.counted == [0, 1] and tally.finished == 2, [(t.number, t.state.name, t.user_attrs) for t in trials]
  frozen, resumed = tally.slots[0]
  assert frozen.state == optuna.trial.TrialState.FAIL and resumed.state == optuna.trial.TrialState.COMPLETE
  assert resumed.user_attrs[shared_study.DRIVER]['host'] == 'elsewhere'
  assert resumed.user_attrs['workdir'] == str(tmp_path / 'B' / 'search' / 'trial_0')
  waited = re.search(
    rf'trial {resumed.number}: resumes trial 0 \(its driver .* wrote no heartbeat for (\d+) s', out_second
  )
  assert waited and int(waited[1]) >= 10, out_second
  assert 'from the start (its old workdir is not reachable from here)' in out_second
  assert "trial 0: FAIL by another driver; no longer this driver's" in out_first, out_first


def _trials_if_any(url: str, name: str) -> list:
  try:
    return _study(url, name).get_trials(deepcopy=False)
  except KeyError:  # (not created yet)
    return []


def test_a_driver_killed_mid_trial_and_started_again_resumes_it_once(local_cluster, tmp_path):
  """SIGKILL while trial 0 trains (its run goes on: a local job outlives its driver), start the driver again and
  kill it again while it waits for that run, then start it a third time: trial 0 is resumed in its workdir once the
  old run has ended, and counts once; nothing more is asked (1 trial requested, 1 ends). Before: the second driver
  left trial 0 running for ever (its workdir was busy) and ran another trial; a trial resumed twice counted twice."""
  url, root = local_cluster['S2S_CLUSTER_PG_URL'], tmp_path / f'killed-{uuid.uuid4().hex[:8]}'
  space = _search_file(
    tmp_path,
    'long_trial',
    'eval/loss',
    'minimize',
    'def suggest(trial, arg=None):\n'
    "  lr = trial.suggest_float('optim.learning_rate', 3e-3, 1e-2)\n"
    "  return {'optim.learning_rate': lr, 'eval_every_steps': 100, 'checkpoint_every_steps': 100,\n"
    "          'num_train_steps': 1500}\n",
  )
  flags = [f'--space={space}', f'--root={root}', '--trials=1', f'--storage={url}', '--poll_seconds=0.5']
  first = _start(tmp_path, *flags)
  metrics, deadline = root / 'trial_0' / 'metrics.jsonl', time.time() + 300
  while not (metrics.exists() and 'eval/loss' in metrics.read_text()):
    assert time.time() < deadline and first.process.poll() is None, first.output()
    time.sleep(0.2)
  first.process.send_signal(signal.SIGKILL)
  first.process.wait()
  second, deadline = _start(tmp_path, *flags), time.time() + 120
  while 'trial 1: waiting for the run of a gone driver' not in second.output()[0]:
    assert time.time() < deadline and second.process.poll() is None, second.output()
    time.sleep(0.2)
  second.process.send_signal(signal.SIGKILL)
  second.process.wait()
  third, _ = _finish(_start(tmp_path, *flags))
  name = json.loads((root / 'study.json').read_text())['study_name']
  trials = _study(url, name).get_trials()
  tally = shared_study.tally(trials)
  assert tally.counted == [0] and tally.finished == 1, [(t.number, t.state.name, t.user_attrs) for t in trials]
  assert [(t.number, t.state.name) for t in trials] == [(0, 'FAIL'), (1, 'FAIL'), (2, 'COMPLETE')]
  resumed = tally.current(0)
  assert resumed.user_attrs['resumed_from'] == 1 and resumed.params == trials[0].params
  assert resumed.user_attrs['workdir'] == str(root / 'trial_0')
  assert 'trial 2: resumes trial 1' in third and 'trial 2: optim' not in third  # (it submitted no run of its own)
  assert 'is in use by' not in (root / 'trial_0.log').read_text()  # one run at a time in the workdir
  assert (root / 'trial_0' / 'DONE').exists()


def test_a_study_or_root_reused_for_another_search_refuses_and_roots_get_their_own_study(local_cluster, tmp_path):
  url, name = local_cluster['S2S_CLUSTER_PG_URL'], f'reuse-{uuid.uuid4().hex[:8]}'
  maximize = _search_file(tmp_path, 'maximize', 'eval/exact_match', 'maximize')
  other_space = _search_file(tmp_path, 'other_space', 'eval/loss', 'minimize')
  first = ['--trials=0', f'--storage={url}', f'--root={tmp_path / "a" / "search"}']
  _finish(_start(tmp_path, f'--space={_SMOKE}', f'--study_name={name}', *first))
  named = [f'--study_name={name}', '--trials=0', f'--storage={url}']
  tries = {
    'direction': _start(tmp_path, f'--space={maximize}', *named, f'--root={tmp_path / "b"}'),
    'space': _start(tmp_path, f'--space={other_space}', *named, f'--root={tmp_path / "c"}'),
    'root': _start(tmp_path, f'--space={maximize}', *first),
  }
  plain = [
    _start(tmp_path, f'--space={_SMOKE}', '--trials=0', f'--storage={url}', f'--root={tmp_path / d / "search"}')
    for d in 'de'
  ]
  errors = {what: _refused(driver) for what, driver in tries.items()}
  assert f"Study '{name}' in postgresql://s2s:***@" in errors['direction']
  assert 'was created to minimize its objective, and this search would maximize eval/exact_match' in errors['direction']
  assert f"Study '{name}' holds a search with space 'experiments/search/smoke.py'" in errors['space']
  assert f'--root={tmp_path / "a" / "search"} holds a search with space' in errors['root']
  assert "metric 'eval/loss' (this command: 'eval/exact_match')" in errors['root']
  assert "direction 'minimize' (this command: 'maximize')" in errors['root']
  study = _study(url, name)
  assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.user_attrs['search']['space'] == _SMOKE
  assert not (tmp_path / 'b' / 'study.json').exists() and not (tmp_path / 'c' / 'study.json').exists()
  # Two roots of the same folder name, no --study_name: a study each.
  names = []
  for driver, d in zip(plain, 'de'):
    _finish(driver, timeout=300)
    names.append(json.loads((tmp_path / d / 'search' / 'study.json').read_text())['study_name'])
    assert names[-1].startswith('search-')
    _study(url, names[-1])
  assert names[0] != names[1]


def test_a_pruned_slurm_trial_stops_through_its_stop_file(local_cluster, tmp_path):
  """--executor=slurm: trial 1 learns nothing and is pruned; the driver does not signal a SLURM job's run (it may
  run on another node), so the run reads ROOT/trial_1/STOP at its next validation, checkpoints and exits; the
  trial is pruned, and resumable."""
  url = local_cluster['S2S_CLUSTER_PG_URL']
  space = _search_file(
    tmp_path,
    'prune',
    'eval/loss',
    'minimize',
    "START = {'optim.learning_rate': 1e-2}\n"
    'def suggest(trial, arg=None):\n'
    "  lr = trial.suggest_float('optim.learning_rate', 0.0, 1e-2)\n"
    "  return {'optim.learning_rate': lr if trial.number == 0 else 0.0, 'eval_every_steps': 10,\n"
    "          'checkpoint_every_steps': 1000, 'num_train_steps': 40 if trial.number == 0 else 3000}\n",
  )
  root = tmp_path / 'slurm'
  flags = [f'--space={space}', f'--root={root}', f'--storage={url}', '--executor=slurm', '--gpus=0', '--time=15']
  flags += ['--poll_seconds=1', '--stop_grace_s=240']
  # Trial 0 first (the median pruner compares a trial with finished ones at the same step), then trial 1.
  _finish(_start(tmp_path, *flags, '--trials=1'), timeout=300)
  out, _ = _finish(_start(tmp_path, *flags, '--trials=2'), timeout=400)
  name = json.loads((root / 'study.json').read_text())['study_name']
  complete, pruned = _study(url, name).get_trials()
  assert complete.state == optuna.trial.TrialState.COMPLETE, out
  assert pruned.state == optuna.trial.TrialState.PRUNED, out
  assert pruned.user_attrs['job']['executor'] == 'slurm'
  assert pruned.user_attrs['stop'].startswith('stopped after'), pruned.user_attrs['stop']
  log = (root / 'trial_1.log').read_text()
  assert 'STOP found (trial 1 pruned at step' in log and 'STOP file: stopped at step' in log, log[-3000:]
  assert not (root / 'trial_1' / 'DONE').exists() and not (root / 'trial_1' / 'STOP').exists()
  assert os.listdir(root / 'trial_1' / 'checkpoints')  # resumable
