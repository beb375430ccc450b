"""scripts/tune.py end to end on the smoke search (3 trials of the tiny default task: one finishes, one fails, one is
pruned), its resume, scripts/report.py on the study, and its refusals before any trial starts."""

import json
import os
import tempfile

from absl.testing import absltest
import pytest
import testutil

_SMOKE = 'experiments/search/smoke.py'


class LastStepTest(absltest.TestCase):
  def test_the_last_step_comes_from_config_json(self):
    # A trial is never pruned at its last validation (only the test decode is left): tune.py reads that step here.
    # (In a subprocess: the script defines absl flags that other scripts loaded by tests may share.)
    workdir = self.create_tempdir().full_path
    probe, scripts = os.path.join(workdir, 'probe.py'), os.path.join(testutil.ROOT, 'scripts')
    with open(probe, 'w', encoding='utf-8') as f:
      f.write(
        'import importlib.util, sys\n'
        f'sys.path.insert(0, {scripts!r})\n'
        f'spec = importlib.util.spec_from_file_location("tune", {os.path.join(scripts, "tune.py")!r})\n'
        'tune = importlib.util.module_from_spec(spec); spec.loader.exec_module(tune)\n'
        'import tune_runs\n'
        'print("LAST", tune_runs.last_step(sys.argv[1]))\n'
      )
    before = testutil.run(probe, workdir)
    self.assertIn('LAST inf', before.stdout, before.stderr[-2000:])  # config.json not written yet
    with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump({'num_train_steps': 1230, 'num_train_epochs': 5.0}, f)
    after = testutil.run(probe, workdir)
    self.assertIn('LAST 1230', after.stdout, after.stderr[-2000:])


_LOAD_TUNE = (  # tune.py loaded in a probe process (it defines absl flags that other scripts loaded by tests share)
  'import importlib.util, json, sys\n'
  f'sys.path.insert(0, {os.path.join(testutil.ROOT, "scripts")!r})\n'
  f'spec = importlib.util.spec_from_file_location("tune", {os.path.join(testutil.ROOT, "scripts", "tune.py")!r})\n'
  'tune = importlib.util.module_from_spec(spec); spec.loader.exec_module(tune)\n'
)


def _probe(folder: str, body: str, timeout: float = 120) -> dict:
  """Runs _LOAD_TUNE + body (which prints one JSON line last) in a subprocess; returns that JSON."""
  probe = os.path.join(folder, 'probe.py')
  with open(probe, 'w', encoding='utf-8') as f:
    f.write(_LOAD_TUNE + body)
  result = testutil.run(probe, timeout=timeout)
  if result.returncode != 0 or not result.stdout.strip():
    raise AssertionError(f'probe failed ({result.returncode}): {result.stdout[-2000:]} {result.stderr[-3000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


class StorageRedactionTest(absltest.TestCase):
  def test_the_storage_password_is_never_written_nor_printed(self):
    # study.json (read by scripts/report.py) and the error naming a storage that cannot be opened show the URL with
    # its password hidden; PostgreSQL-style URL, nothing connects (the driver is not even installed here).
    folder = self.create_tempdir().full_path
    url = 'postgresql://tuner:s3cr%40t-pw@127.0.0.1:1/optuna?sslmode=require&sslpassword=k3y-pw'
    out = _probe(
      folder,
      'from absl import app, flags\n'
      f'flags.FLAGS(["tune", "--space={_SMOKE}", "--root={folder}", "--storage={url}"])\n'
      'import tune_study\n'
      'module, _ = tune.load_space(flags.FLAGS.space)\n'
      f'tune_study.write_study_json({folder!r}, tune_study.search_of(module, flags.FLAGS.space), {url!r}, "study")\n'
      'try:\n'
      f'  tune.make_study(module, {url!r}, "study")\n'
      '  error = ""\n'
      'except app.UsageError as e:\n'
      '  error = str(e)\n'
      f'print(json.dumps({{"study": open({os.path.join(folder, "study.json")!r}).read(), "error": error}}))\n',
    )
    self.assertEqual(
      json.loads(out['study'])['storage'], 'postgresql://tuner:***@127.0.0.1:1/optuna?sslmode=require&sslpassword=***'
    )
    self.assertIn('--storage=postgresql://tuner:***@127.0.0.1:1/optuna', out['error'])
    self.assertIn('cannot open the study', out['error'])
    for text in (out['study'], out['error']):
      for secret in ('s3cr', 'k3y', 't-pw'):
        self.assertNotIn(secret, text)

  @pytest.mark.slow  # tune.py started (about 5 s)
  def test_tune_stores_a_working_storage_url_without_its_secret(self):
    # A real study in SQLite behind a URL that carries a secret (SQLite ignores an unknown URI parameter).
    folder = self.create_tempdir().full_path
    url = f'sqlite:///file:{folder}/study.db?mode=rwc&password=s3cret-pw&uri=true'
    root = os.path.join(folder, 'root')
    result = _tune(f'--space={_SMOKE}', f'--root={root}', '--trials=0', f'--storage={url}', cache_dir=folder)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(root, 'study.json'), encoding='utf-8') as f:
      text = f.read()
    self.assertEqual(json.loads(text)['storage'], url.replace('s3cret-pw', '***'))
    self.assertNotIn('s3cret', text + result.stdout + result.stderr)


class GridSamplerTest(absltest.TestCase):
  def test_the_last_grid_point_is_told_without_an_error(self):
    # Optuna's GridSampler calls study.stop() in the tell of the last grid point, which raises outside
    # Study.optimize: the driver crashed there with --sampler=grid.
    out = _probe(
      self.create_tempdir().full_path,
      'from absl import flags\n'
      'import optuna\n'
      f'flags.FLAGS(["tune", "--space={_SMOKE}", "--root=/nowhere", "--sampler=grid"])\n'
      'module, _ = tune.load_space(flags.FLAGS.space)\n'
      'study = optuna.create_study(sampler=tune.make_sampler(module, 0))\n'
      'for _ in range(4):\n'
      '  trial = study.ask()\n'
      '  module.suggest(trial)\n'
      '  study.tell(trial, 1.0)\n'
      'print(json.dumps(sorted(tuple(t.params.values()) for t in study.trials)))\n',
    )
    self.assertEqual(sorted(map(tuple, out)), sorted((lr, h) for lr in (3e-3, 1e-2) for h in (32, 48)))


@pytest.mark.slow  # real submitit jobs (about 10 s)
class StopRunTest(absltest.TestCase):
  def test_a_pruned_run_is_waited_for_and_killed_after_the_grace(self):
    # stop_request / stop_progress: a run that stops (told through its local job: the controller passes SIGTERM on)
    # is waited for until its stop checkpoint is written; one that holds its workdir and ignores SIGTERM is killed
    # after the grace, and the driver goes on. Both get the STOP file too (the run reads it at its next validation).
    folder = self.create_tempdir().full_path
    child = os.path.join(testutil.ROOT, 'tests', 'stop_child.py')
    out = _probe(
      folder,
      'import os, time, submitit, launch, tune_runs\n'
      'from absl import flags\n'
      f'folder, child = {folder!r}, {child!r}\n'
      f'flags.FLAGS(["tune", "--space={_SMOKE}", f"--root={folder}"])\n'
      'def stop(workdir, job, grace):\n'
      '  flags.FLAGS.stop_grace_s = grace\n'
      '  os.makedirs(workdir, exist_ok=True)\n'
      '  request = tune_runs.stop_request(workdir, job, "pruned", signal_ok=True)\n'
      '  cancel = lambda: job.cancel(check=False)\n'
      '  text = open(os.path.join(workdir, "STOP")).read()\n'
      '  while (outcome := tune_runs.stop_progress(request, workdir, job.done(), cancel)) is None:\n'
      '    time.sleep(0.1)\n'
      '  return outcome, text, os.path.exists(os.path.join(workdir, "STOP"))\n'
      'executor = submitit.LocalExecutor(folder=os.path.join(folder, ".submitit"))\n'
      'executor.update_parameters(timeout_min=5)\n'
      'def start(name, *extra):\n'
      '  job = executor.submit(launch.run_one, [sys.executable, child, os.path.join(folder, name), *extra],\n'
      '                        os.path.join(folder, name + ".log"), 30.0)\n'
      '  while not os.path.exists(os.path.join(folder, name + ".ready")):\n'
      '    time.sleep(0.05)\n'
      '  return job\n'
      'result = {}\n'
      'job = start("stops", "stop")\n'
      'result["stops"], result["stop_file"], result["left"] = stop(os.path.join(folder, "no_lock"), job, 30.0)\n'
      'result["stops_code"] = job.result()\n'
      'result["marker"] = os.path.exists(os.path.join(folder, "stops"))\n'
      'workdir = os.path.join(folder, "trial_0")\n'
      'os.makedirs(workdir)\n'
      'job = start("hangs", "ignore", workdir)\n'
      'pid = int(open(os.path.join(folder, "hangs.ready")).read())\n'
      'start_s = time.monotonic()\n'
      'result["hangs"], _, _ = stop(workdir, job, 1.0)\n'
      'result["hangs_s"] = time.monotonic() - start_s\n'
      'time.sleep(1)\n'
      'stat = f"/proc/{pid}/stat"\n'
      'result["alive"] = os.path.exists(stat) and open(stat).read().split(")")[-1].split()[0] != "Z"\n'
      'print(json.dumps(result))\n',
    )
    self.assertRegex(out['stops'], r'^stopped after \d+ s$')
    self.assertEqual(out['stops_code'], 143)  # run_one: the run stopped cleanly after SIGTERM
    self.assertTrue(out['marker'])  # its stop checkpoint was not cut short
    self.assertEqual(out['stop_file'], 'pruned\n')
    self.assertFalse(out['left'])  # removed once the run ended (a rerun of the workdir must not stop at once)
    self.assertEqual(out['hangs'], 'killed: still running 1 s after the stop request')
    self.assertLess(out['hangs_s'], 15)
    self.assertFalse(out['alive'])


def _tune(*flags: str, cache_dir: str):
  return testutil.run(os.path.join(testutil.ROOT, 'scripts', 'tune.py'), *flags, timeout=1200, S2S_CACHE_DIR=cache_dir)


@pytest.mark.slow  # three tiny training runs through submitit (about 2 minutes)
class TuneTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.cache, cls.root = os.path.join(tmp, 'cache'), os.path.join(tmp, 'study')
    cls.first = _tune(
      f'--space={_SMOKE}:force=1', f'--root={cls.root}', '--trials=3', '--poll_seconds=1', cache_dir=cls.cache
    )

  def test_a_study_with_a_finished_a_failed_and_a_pruned_trial(self):
    import optuna  # pylint: disable=g-import-not-at-top

    self.assertEqual(self.first.returncode, 0, self.first.stdout[-3000:] + self.first.stderr[-3000:])
    with open(os.path.join(self.root, 'study.json'), encoding='utf-8') as f:
      name = json.load(f)['study_name']
    self.assertRegex(name, r'^study-[0-9a-f]{8}$')  # the root's folder name and a random id
    study = optuna.load_study(study_name=name, storage=f'sqlite:///{self.root}/study.db')
    states = [t.state for t in study.trials]
    self.assertEqual(
      states, [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED]
    )
    complete, failed, pruned = study.trials
    self.assertEqual(complete.params, {'optim.learning_rate': 1e-2, 'model.hidden_dim': 48})  # the file's START
    self.assertLess(complete.value, min(pruned.intermediate_values.values()))  # it learned; the pruned one did not
    self.assertTrue(os.path.exists(os.path.join(self.root, 'trial_0', 'DONE')))
    self.assertIn('warmup_steps', failed.user_attrs['error'])  # the failed run's last log lines
    self.assertFalse(os.path.exists(os.path.join(self.root, 'trial_2', 'DONE')))  # stopped, resumable
    self.assertTrue(os.listdir(os.path.join(self.root, 'trial_2', 'checkpoints')))
    self.assertTrue(pruned.intermediate_values)
    self.assertRegex(pruned.user_attrs['stop'], r'^stopped after \d+ s$')  # within --stop_grace_s
    self.assertFalse(os.path.exists(os.path.join(self.root, 'trial_2', 'STOP')))  # (read by the run, or removed)
    self.assertIn('Best trial 0', self.first.stdout)
    # Running the command again resumes the study: nothing is rerun.
    again = _tune(
      f'--space={_SMOKE}:force=1', f'--root={self.root}', '--trials=3', '--poll_seconds=1', cache_dir=self.cache
    )
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertIn('3 finished trial(s)', again.stdout)
    self.assertLen(optuna.load_study(study_name=name, storage=f'sqlite:///{self.root}/study.db').trials, 3)
    # The report reads the study.
    report = testutil.run(
      os.path.join(testutil.ROOT, 'scripts', 'report.py'), f'--root={self.root}', S2S_CACHE_DIR=self.cache
    )
    self.assertEqual(report.returncode, 0, report.stderr[-3000:])
    with open(os.path.join(self.root, 'report.md'), encoding='utf-8') as f:
      text = f.read()
    self.assertIn('## Search `experiments/search/smoke.py:force=1`: eval/loss (minimize)', text)
    self.assertRegex(text, r'\| 1 \| .* \| fail \|')
    self.assertRegex(text, r'\| 2 \| .* \| pruned \|')
    self.assertTrue(os.path.exists(os.path.join(self.root, 'figures', 'study_history.png')))

  def test_bad_inputs_fail_before_any_trial(self):
    folder = self.create_tempdir().full_path
    no_suggest = os.path.join(folder, 'no_suggest.py')
    with open(no_suggest, 'w', encoding='utf-8') as f:
      f.write("CONFIG = 'experiments/default.py'\nMETRIC = 'eval/exact_match'\nDIRECTION = 'maximize'\n")
    never = os.path.join(folder, 'never.py')
    with open(never, 'w', encoding='utf-8') as f:
      f.write(
        "CONFIG = 'experiments/default.py'\nMETRIC = 'eval/rouge1'\nDIRECTION = 'maximize'\n"
        'def suggest(trial, arg=None):\n  return {}\n'
      )
    for flags, message in (
      ([f'--space={no_suggest}'], "lacks ['suggest']"),
      ([f'--space={never}'], "METRIC='eval/rouge1' is never logged"),
      ([f'--space={_SMOKE}', '--storage=postgresql://nobody@127.0.0.1:1/nothing'], 'cannot open the study'),
    ):
      root = os.path.join(folder, 'root')
      result = _tune(*flags, f'--root={root}', '--trials=1', cache_dir=os.path.join(folder, 'cache'))
      self.assertNotEqual(result.returncode, 0)
      self.assertIn(message, result.stderr)
      self.assertFalse(os.path.exists(os.path.join(root, 'trial_0')))


if __name__ == '__main__':
  absltest.main()
