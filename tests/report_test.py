"""scripts/report.py end to end on the smoke sweep (run through scripts/sweep.py), and its statistics helpers.

The sweep (2 tiny runs of the dates task: bahdanau vs none_concat) runs once per class, in a subprocess, into a
temporary root with its own data cache; a copy of one run without DONE stands for an unfinished run.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
from scipy import stats
import testutil

from s2s_jax import checkpointing
from s2s_jax import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _run(script: str, *flags: str, cache_dir: str) -> subprocess.CompletedProcess:
  return testutil.run(os.path.join(ROOT, 'scripts', script), *flags, timeout=900, S2S_CACHE_DIR=cache_dir)


def _csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
  with open(path, encoding='utf-8', newline='') as f:
    reader = csv.DictReader(f)
    return list(reader.fieldnames), list(reader)


@pytest.mark.slow  # runs a whole smoke sweep (about 50 s): the fast tier is near its 600 s budget
class ReportTest(absltest.TestCase):
  """One test method, so that pytest-xdist never runs the sweep twice (once per worker)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.cache_dir, cls.root = os.path.join(tmp, 'cache'), os.path.join(tmp, 'smoke')
    sweep = _run('sweep.py', '--sweep=experiments/sweeps/smoke.py', f'--root={cls.root}', cache_dir=cls.cache_dir)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    # An unfinished run (no DONE, no test records, no best/) beside the sweep's runs.
    unfinished = os.path.join(cls.root, 'unfinished')
    os.makedirs(unfinished)
    shutil.copy(os.path.join(cls.root, 'attention=bahdanau', 'config.json'), unfinished)
    with open(os.path.join(cls.root, 'attention=bahdanau', 'metrics.jsonl'), encoding='utf-8') as f:
      first = f.readline()
    with open(os.path.join(unfinished, 'metrics.jsonl'), 'w', encoding='utf-8') as f:
      f.write(first + first[:10])  # and a last line cut short
    cls.report = _run('report.py', f'--root={cls.root}', '--baseline=attention=none_concat', cache_dir=cls.cache_dir)

  def test_smoke_sweep_report(self):
    self.assertEqual(self.report.returncode, 0, self.report.stderr[-5000:])
    self.assertEqual(self.report.stdout.strip().splitlines()[-1], os.path.join(self.root, 'report.md'))
    self.assertRegex(self.report.stderr, r'WARNING: unfinished runs .*: unfinished')
    for check in (
      self._check_results_csv,
      self._check_agg_csv,
      self._check_markdown,
      self._check_bad_baseline,
      self._check_curve,
    ):
      with self.subTest(check.__name__):
        check()

  def _check_results_csv(self):
    columns, rows = _csv(os.path.join(self.root, 'results.csv'))
    fixed = ['run', 'config', 'model.attention', 'seed', 'num_params', 'train_s', 'best_step']
    self.assertEqual(columns[: len(fixed)], fixed)
    rest = columns[len(fixed) :]
    prefixes = [c.partition('/')[0] for c in rest]
    self.assertEqual(prefixes, sorted(prefixes))  # eval/* then test/*
    self.assertContainsSubset(
      ['eval/exact_match', 'eval/loss', 'test/exact_match', 'test/bleu', 'test/chrf', 'test/loss'], rest
    )
    self.assertEqual([r['run'] for r in rows], ['attention=bahdanau', 'attention=none_concat', 'unfinished'])
    params = {}
    for row in rows[:2]:
      workdir = os.path.join(self.root, row['run'])
      tree, step = checkpointing.restore_params(workdir, 'best')
      params[row['run']] = sum(np.size(x) for x in _leaves(tree))
      self.assertEqual(int(row['num_params']), params[row['run']], row['run'])
      self.assertEqual(int(row['best_step']), step)
      self.assertEqual(row['config'], 'experiments/default.py:size=tiny')
      self.assertEqual(row['model.attention'], row['run'].partition('=')[2])
      self.assertEqual(row['seed'], '0')
      self.assertGreater(float(row['train_s']), 0)
      self.assertBetween(float(row['test/exact_match']), 0, 100)
      self.assertBetween(float(row['test/chrf']), 0, 100)
      with open(os.path.join(workdir, 'eval_test.json'), encoding='utf-8') as f:
        self.assertAlmostEqual(float(row['test/bleu']), json.load(f)['bleu'], places=6)
      with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
        at_best = [r for r in map(json.loads, f) if r['step'] == step and 'eval/loss' in r]
      self.assertAlmostEqual(float(row['eval/loss']), at_best[-1]['eval/loss'], places=6)
    self.assertGreater(params['attention=bahdanau'], params['attention=none_concat'])  # the attention layer
    self.assertEqual((rows[2]['best_step'], rows[2]['test/exact_match']), ('', ''))
    self.assertEqual(rows[2]['num_params'], rows[0]['num_params'])  # counted without any checkpoint

  def _check_agg_csv(self):
    columns, rows = _csv(os.path.join(self.root, 'results_agg.csv'))
    self.assertEqual(columns[:3], ['variant', 'model.attention', 'n'])
    for metric in ('test/exact_match', 'test/bleu', 'eval/exact_match'):
      self.assertContainsSubset([f'{metric}_{s}' for s in ('mean', 'std', 'ci95')], columns)
    self.assertEqual(
      [(r['variant'], r['n']) for r in rows], [('attention=bahdanau', '1'), ('attention=none_concat', '1')]
    )  # not the unfinished
    _, runs = _csv(os.path.join(self.root, 'results.csv'))
    for agg, run in zip(rows, runs):
      self.assertAlmostEqual(float(agg['test/bleu_mean']), float(run['test/bleu']))
      self.assertEqual((agg['test/bleu_std'], agg['test/bleu_ci95']), ('', ''))  # n = 1

  def _check_markdown(self):
    with open(os.path.join(self.root, 'report.md'), encoding='utf-8') as f:
      text = f.read()
    self.assertIn('| variant | n | test/exact_match |', text)
    self.assertRegex(text, r'\n\| attention=bahdanau \| 1 \| [\d.]+ \|')
    self.assertRegex(text, r'\n\| attention=none_concat \| 1 \| [\d.]+ \|')
    self.assertIn('Significance against the baseline `attention=none_concat`', text)
    self.assertIn('sacrebleu.significance.PairedTest', text)
    p_value = r'(0\.\d{4}( \*)?|1\.0000|1 \(same\))'
    self.assertRegex(
      text,
      rf'\| attention=bahdanau \| attention=bahdanau \| [\d.]+ \([+-][\d.]+\) \| {p_value} \| '
      rf'[\d.]+ \([+-][\d.]+\) \| {p_value} \|',
    )
    self.assertRegex(text, r'sacreBLEU signature, BLEU: `nrefs:1\|bs:1000\|seed:12345')
    self.assertIn('unfinished', text)
    self.assertIn('No attention in attention=none_concat', text)
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    self.assertEqual(
      links,
      [
        'figures/learning_curves.png',
        'figures/score_by_src_len.png',
        'figures/attention_attention_bahdanau_1.png',
        'figures/attention_attention_bahdanau_2.png',
      ],
    )
    from matplotlib import image  # pylint: disable=g-import-not-at-top

    for link in links:
      path = os.path.join(self.root, link)
      with open(path, 'rb') as f:
        self.assertEqual(f.read(8), _PNG_SIGNATURE, link)
      self.assertGreater(os.path.getsize(path), 5_000, link)
      pixels = image.imread(path)
      self.assertGreaterEqual(min(pixels.shape[:2]), 200, link)
      self.assertGreater(float(pixels[..., :3].std()), 0.01, link)  # not a blank canvas

  def _check_bad_baseline(self):
    result = _run('report.py', f'--root={self.root}', '--baseline=attention=luong', cache_dir=self.cache_dir)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("--baseline='attention=luong' is neither a finished run", result.stderr)
    self.assertIn('attention=none_concat', result.stderr)

  def _check_curve(self):
    """scripts/curve.py scores every kept checkpoint on test and plots them with the validation records."""
    workdir = os.path.join(tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()), 'run')
    shutil.copytree(os.path.join(self.root, 'attention=bahdanau'), workdir)
    out = os.path.join(workdir, 'curve.png')
    result = _run(
      'curve.py',
      f'--workdir={workdir}',
      f'--out={out}',
      '--metrics=exact_match,bleu',
      '--evaluate_checkpoints',
      cache_dir=self.cache_dir,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-5000:])
    kept = sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())
    scored = {}
    for step in kept:
      with open(os.path.join(workdir, f'eval_test_step_{step}.json'), encoding='utf-8') as f:
        scored[step] = json.load(f)
      self.assertEqual(scored[step]['checkpoint_step'], step)
    with open(os.path.join(workdir, 'eval_test.json'), encoding='utf-8') as f:
      final = json.load(f)
    # The checkpoint the run's own test evaluation used, scored again from checkpoints/: the same numbers.
    self.assertIn(final['checkpoint_step'], scored)
    for key in ('bleu', 'exact_match', 'chrf'):
      self.assertAlmostEqual(scored[final['checkpoint_step']][key], final[key], places=6)
    self.assertIn('1 start(s), resumed 0 time(s)', result.stdout)
    rows = [line for line in result.stdout.splitlines() if re.match(r'\| \d+ \|', line)]
    for step in kept:
      row = [r for r in rows if r.startswith(f'| {step} |')]
      self.assertLen(row, 1)
      self.assertIn(f'| {scored[step]["bleu"]:.2f} |', row[0])
    with open(out, 'rb') as f:
      self.assertEqual(f.read(8), _PNG_SIGNATURE)
    bad = _run('curve.py', f'--workdir={workdir}', '--metrics=rouge9', cache_dir=self.cache_dir)
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn("--metrics names ['rouge9'], which the run never logged", bad.stderr)


class ResolveBaselineTest(absltest.TestCase):
  """--baseline names a run, a variant, or a unique part of a variant (in a subprocess: report.py defines flags)."""

  def test_run_variant_and_unique_part(self):
    script = (
      'import importlib.util, json, sys\n'
      'spec = importlib.util.spec_from_file_location("report", sys.argv[1])\n'
      'report = importlib.util.module_from_spec(spec); spec.loader.exec_module(report)\n'
      'variants = ["attention=none_init,context_to_output=false", "attention=none_concat,context_to_output=true",\n'
      '            "attention=luong,context_to_output=false"]\n'
      'firsts = {v: {"name": v + "/seed_0", "variant": v, "done": True} for v in variants}\n'
      'runs = list(firsts.values())\n'
      'for spec in sys.argv[2:]:\n'
      '  try:\n'
      '    print(json.dumps(report.resolve_baseline(spec, runs, firsts)[0]))\n'
      '  except Exception as e:  # the UsageError message\n'
      '    print(json.dumps("error: " + str(e)))\n'
    )
    specs = [
      'attention=luong,context_to_output=false/seed_0',
      'attention=none_init,context_to_output=false',
      'attention=none_concat',
      'context_to_output=true,attention=none_concat',
      'context_to_output=false',
      'attention=bahdanau',
    ]
    result = subprocess.run(
      [sys.executable, '-c', script, os.path.join(ROOT, 'scripts', 'report.py'), *specs],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = [json.loads(line) for line in result.stdout.splitlines()]
    self.assertEqual(
      out[:4],
      [
        'attention=luong,context_to_output=false',
        'attention=none_init,context_to_output=false',
        'attention=none_concat,context_to_output=true',
        'attention=none_concat,context_to_output=true',
      ],
    )
    self.assertIn('matches several variants', out[4])
    self.assertIn('is neither a finished run', out[5])

  def test_hypothesis_files_split_at_newline_only(self):
    # A hypothesis holding U+2028 or a form feed stays one line, aligned with its reference (issue 15, item 4).
    path = os.path.join(self.create_tempdir().full_path, 'eval_test.hyp.txt')
    with open(path, 'w', encoding='utf-8', newline='') as f:
      f.write('a\u2028b\x0cc\nd\r\n\x85e\n')
    script = (
      'import importlib.util, json, sys\n'
      'spec = importlib.util.spec_from_file_location("report", sys.argv[1])\n'
      'report = importlib.util.module_from_spec(spec); spec.loader.exec_module(report)\n'
      'import report_runs\n'
      'print(json.dumps([report_runs.read_lines(sys.argv[2]), report_runs.read_lines(sys.argv[2] + ".missing")]))\n'
    )
    result = subprocess.run(
      [sys.executable, '-c', script, os.path.join(ROOT, 'scripts', 'report.py'), path],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(json.loads(result.stdout), [['a\u2028b\x0cc', 'd', '\x85e'], None])


class StudyStorageTest(absltest.TestCase):
  def test_the_storage_password_never_reaches_the_report(self):
    # A real study in SQLite behind a URL that carries a secret (SQLite ignores an unknown URI parameter): the study
    # table shows the URL with the secret hidden, whether study.json holds it (written before the fix), holds it
    # hidden (tune.py now: the report then opens the URL without the hidden part) or --storage gives it.
    folder = self.create_tempdir().full_path
    url = f'sqlite:///file:{folder}/study.db?mode=rwc&password=s3cret-pw&uri=true'
    script = (
      'import importlib.util, json, os, sys\n'
      'import optuna\n'
      'spec = importlib.util.spec_from_file_location("report", sys.argv[1])\n'
      'report = importlib.util.module_from_spec(spec); spec.loader.exec_module(report)\n'
      'import report_study\n'
      'root, url = sys.argv[2], sys.argv[3]\n'
      'optuna.logging.set_verbosity(optuna.logging.WARNING)\n'
      'study = optuna.create_study(storage=url, study_name="study")\n'
      'study.ask().suggest_float("optim.learning_rate", 1e-3, 1e-2)  # one running trial: no figures to draw\n'
      'for case, stored, flag in (("old", url, None), ("hidden", url.replace("s3cret-pw", "***"), None),\n'
      '                           ("flag", url.replace("s3cret-pw", "***"), url)):\n'
      '  info = {"space": "s.py", "metric": "eval/loss", "direction": "minimize", "storage": stored,\n'
      '          "study_name": "study"}\n'
      '  with open(os.path.join(root, "study.json"), "w") as f:\n'
      '    json.dump(info, f)\n'
      '  lines = report_study.study_markdown(root, root, flag) if flag else report_study.study_markdown(root, root)\n'
      '  print(json.dumps([case, "\\n".join(lines)]), flush=True)\n'
    )
    result = subprocess.run(
      [sys.executable, '-c', script, os.path.join(ROOT, 'scripts', 'report.py'), folder, url],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    shown = url.replace('s3cret-pw', '***')
    for case, text in map(json.loads, result.stdout.splitlines()):
      self.assertNotIn('s3cret', text, case)
      self.assertIn(f'1 trials in `{shown}`', text, case)
      self.assertIn(f'`optuna-dashboard {shown}`', text, case)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertLen(result.stdout.splitlines(), 3)
    self.assertNotIn('s3cret', result.stdout + result.stderr)


class OwnEvaluationTest(absltest.TestCase):
  """The per-length figure and the significance test read only the training's own eval_<split>.json / .hyp.txt."""

  def test_an_evaluation_with_other_settings_under_the_run_name_is_left_out(self):
    root = self.create_tempdir().full_path
    buckets = [{'min_len': 1, 'max_len': 10, 'n': 2, 'exact_match': 50.0, 'bleu': 1.0}]
    cases = {
      'own': {'checkpoint_step': 40, 'tag': ''},
      'old_format': {'checkpoint_step': 40},  # written before evaluations recorded their settings
      'replaced': {'checkpoint_step': 40, 'tag': 'avg2', 'checkpoint': 'avg:2'},  # evaluate --name=test
      'other_step': {'checkpoint_step': 60},
    }
    for name, record in cases.items():
      os.makedirs(os.path.join(root, name, 'best', '40'))
      with open(os.path.join(root, name, 'eval_test.json'), 'w', encoding='utf-8') as f:
        json.dump({**record, 'exact_match_by_src_len': buckets, 'bleu_by_src_len': buckets}, f)
      with open(os.path.join(root, name, 'eval_test.hyp.txt'), 'w', encoding='utf-8') as f:
        f.write('a\nb\n')
    script = (
      'import importlib.util, json, os, sys\n'
      'spec = importlib.util.spec_from_file_location("report", sys.argv[1])\n'
      'report = importlib.util.module_from_spec(spec); spec.loader.exec_module(report)\n'
      'import report_figures, report_runs\n'
      'out = {}\n'
      'for name in sys.argv[3:]:\n'
      '  run = {"name": name, "workdir": os.path.join(sys.argv[2], name)}\n'
      '  found = report_figures.plot_by_length(os.path.join(sys.argv[2], name + ".png"), {"v": [run]}, "test")\n'
      '  out[name] = [found, report_runs.own_eval(run, "test")[1]]\n'
      'print(json.dumps(out))\n'
    )
    result = subprocess.run(
      [sys.executable, '-c', script, os.path.join(ROOT, 'scripts', 'report.py'), root, *cases],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = json.loads(result.stdout)
    for name in ('own', 'old_format'):
      self.assertEqual(out[name], [['exact_match', 'bleu'], os.path.join(root, name, 'eval_test.hyp.txt')])
    for name in ('replaced', 'other_step'):
      self.assertEqual(out[name], [[], None], name)
    self.assertIn('replaced: ', result.stderr)
    self.assertIn("is not the training's own evaluation (other settings: avg2)", result.stderr)
    self.assertIn('(step 60, not the best step 40)', result.stderr)
    self.assertEqual(result.stderr.count('WARNING: replaced:'), 1)  # once per run


def _leaves(tree):
  if isinstance(tree, dict):
    for value in tree.values():
      yield from _leaves(value)
  else:
    yield tree


class NoRunsTest(absltest.TestCase):
  def test_empty_root_exits_with_a_message(self):
    root = self.create_tempdir().full_path
    os.makedirs(os.path.join(root, 'not_a_run'))  # a directory without config.json is no run
    for path in (root, os.path.join(root, 'missing')):
      result = _run('report.py', f'--root={path}', cache_dir=root)
      self.assertNotEqual(result.returncode, 0)
      self.assertIn(f'No runs in {path}', result.stderr)
      self.assertFalse(os.path.exists(os.path.join(path, 'report.md')))


class StatisticsTest(absltest.TestCase):
  def test_mean_std_ci95_is_the_t_interval(self):
    values = [21.0, 23.5, 22.0, 25.0]
    mean, std, ci = metrics.mean_std_ci95(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    self.assertAlmostEqual(mean, np.mean(values))
    self.assertAlmostEqual(std, np.std(values, ddof=1))
    self.assertAlmostEqual(ci, (high - low) / 2)
    self.assertEqual(metrics.mean_std_ci95([3.0]), (3.0, None, None))

  def test_paired_bootstrap_exact_match(self):
    rng = np.random.default_rng(0)
    base = rng.random(300) < 0.5
    self.assertEqual(metrics.paired_bootstrap_exact_match(base, base), (100.0 * base.mean(), 1.0))
    better = base | (rng.random(300) < 0.5)  # about 25 points more
    score, p = metrics.paired_bootstrap_exact_match(base, better)
    self.assertAlmostEqual(score, 100.0 * better.mean())
    self.assertLess(p, 0.01)
    noisy = base ^ (rng.random(300) < 0.02)  # a few flips both ways
    self.assertGreater(metrics.paired_bootstrap_exact_match(base, noisy)[1], 0.05)


if __name__ == '__main__':
  absltest.main()
