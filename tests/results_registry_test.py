"""The newcomer's path (issue 29): the commands of the Multi30k results page, run at size=tiny on a slice of the real
corpus, finish, and their workdirs become records and table rows through the results generator."""

import gzip
import itertools
import os
import shlex
import sys

from absl.testing import absltest
import pytest
import shared_data
import testutil

_REPO = testutil.ROOT
sys.path.insert(0, os.path.join(_REPO, 'scripts'))
import results_table  # pylint: disable=g-import-not-at-top,wrong-import-position

_PAGE = 'docs/results/multi30k.md'
_RUNS = ('multi30k/seq2seq_lstm', 'multi30k/strong')  # a tutorial model and the strong one: both tokenizers
_FEW_STEPS = (
  '--config.num_train_steps=4',
  '--config.eval_every_steps=4',
  '--config.checkpoint_every_steps=4',
  '--config.log_every_steps=2',
)


def _slice_multi30k(test: absltest.TestCase, n: int = 200) -> str:
  """The first n lines of each de/en split of the real corpus in a temp manual dir (skips where it is absent)."""
  root = shared_data.require(test, 'multi30k', 'task1', 'raw')
  manual = test.create_tempdir('raw').full_path
  os.makedirs(os.path.join(manual, 'task1', 'raw'))
  for split, lang in itertools.product(('train', 'val', 'test_2016_flickr'), ('de', 'en')):
    name = f'{split}.{lang}.gz'
    with gzip.open(os.path.join(root, name), 'rt', encoding='utf-8') as f:
      lines = list(itertools.islice(f, n))
    with gzip.open(os.path.join(manual, 'task1', 'raw', name), 'wt', encoding='utf-8') as f:
      f.writelines(lines)
  return manual


def _tiny(command: str, workdir: str) -> list[str]:
  """The page's command with DIR -> workdir and its config at size=tiny: the flags after `python`."""
  argv = shlex.split(command)
  assert argv[:3] == ['python', '-m', 's2s_jax.main'], command
  out = []
  for arg in argv[1:]:
    if arg.startswith('--config=') and ':' not in arg:
      arg += ':size=tiny'
    out.append(arg.replace('--workdir=DIR', f'--workdir={workdir}'))
  return out


@pytest.mark.slow
class Multi30kPageTest(absltest.TestCase):
  def test_the_page_commands_at_size_tiny_become_records_and_rows(self):
    with open(os.path.join(_REPO, _PAGE), encoding='utf-8') as f:
      page_text = f.read()
    published = {r['name']: r for r in results_table.load_records()}
    manual, data_dir = _slice_multi30k(self), self.create_tempdir('data').full_path
    fresh = []
    for name in _RUNS:
      old = published[name]
      self.assertEqual(old['page'], _PAGE)
      self.assertIn(f'`{old["command"]}`', page_text)  # the command the page shows is the one run here
      workdir = os.path.join(self.create_tempdir().full_path, 'run')
      flags = _tiny(old['command'], workdir)
      result = testutil.run(
        *flags, f'--config.data.manual_dir={manual}', f'--config.data.data_dir={data_dir}', *_FEW_STEPS
      )
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      anchor = f'{old["anchor"]["label"]} {old["anchor"]["value"]}'
      rec = results_table.record_from_workdir(
        workdir, name, _PAGE, old['title'], old['metric'], anchor, old['command'], summary=old['summary']
      )
      results_table.check_record(rec, name)
      self.assertEqual((rec['source'], rec['data'], rec['resumes']), ('run', 'multi30k', 0))
      self.assertBetween(rec['metrics'][old['metric']], 0.0, 100.0)
      self.assertIn('test/chrf', rec['metrics'])
      self.assertEqual([point[0] for point in rec['curve']], [4])  # one validation, at the last step
      self.assertGreater(rec['wall_s'], 0.0)
      self.assertRegex(rec['commit'], r'^[0-9a-f]{7}(\+dirty)?$')
      self.assertRegex(rec['date'], r'^\d{4}-\d{2}-\d{2}$')
      self.assertGreater(rec['dot_peak_gflops'], 0.0)  # the probe of this start
      fresh.append(rec)

    records = [r for r in published.values() if r['name'] not in _RUNS] + fresh
    table = results_table.regenerate(page_text, os.path.join(_REPO, _PAGE), records)
    for rec in fresh:
      row = next(line for line in table.split('\n') if line.startswith(f'| {rec["title"]} |'))
      self.assertIn(f'**{results_table._num(rec["metrics"][rec["metric"]])}**', row)  # pylint: disable=protected-access
      self.assertIn(f'{rec["commit"]}, {rec["date"]} |', row)  # a run's row: no 'published before the registry'
      self.assertIn(f'- {rec["title"]}: `{rec["command"]}`; also ', table)
    summary = results_table.render('summary', os.path.join(_REPO, 'README.md'), records)
    for rec in fresh:
      self.assertTrue(any(f'[{rec["title"]}](docs/results/multi30k.md)' in line for line in summary))


if __name__ == '__main__':
  absltest.main()
