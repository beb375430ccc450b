"""The results registry: committed tables equal what results/ generates, records are checked, links resolve."""

import json
import os
import re
import subprocess
import sys

from absl import app
from absl.testing import absltest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(_REPO, 'scripts'))
import results_table  # pylint: disable=g-import-not-at-top,wrong-import-position


def _record(name: str, value: float, **extra) -> dict:
  rec = {
    'kind': 'result',
    'name': name,
    'page': 'docs/results/example.md',
    'title': f'model {name}',
    'summary': True,
    'data': 'multi30k',
    'metric': 'test/bleu',
    'metrics': {'test/bleu': value},
    'anchor': {'label': 'tutorial', 'value': 20.6},
    'command': 'python -m s2s_jax.main --config=X',
    'commit': 'abc1234',
    'date': '2026-12-06',
    'machine': 'CPU, 2 cores',
    'dot_peak_gflops': 150.0,
    'wall_s': 600.0,
    'resumes': 0,
    'curve': [[100, 60.0, 10.0]],
    'source': 'run',
  }
  rec.update(extra)
  return rec


class CommittedTablesTest(absltest.TestCase):
  def test_every_generated_table_matches_the_records(self):
    stale = results_table.stale_tables()
    self.assertEqual(stale, [], 'run: python scripts/results_table.py tables')

  def test_every_record_is_valid(self):
    for rec in results_table.load_records():  # raises on a malformed record or a misplaced file
      self.assertIn(rec['kind'], ('result', 'speed'))

  def test_every_plot_of_a_record_is_committed_and_small(self):
    files = [r['plot']['file'] for r in results_table.load_records() if r.get('plot')]
    self.assertIn('docs/speed_vs_pytorch.png', files)
    for name in files:
      self.assertLessEqual(os.path.getsize(os.path.join(_REPO, name)), 150_000, name)


class GeneratorTest(absltest.TestCase):
  def test_a_hand_edited_number_is_stale(self):
    md = os.path.join(_REPO, 'docs', 'results', 'example.md')
    records = [_record('m/a', 22.04), _record('m/b', 33.6, summary=False)]
    text = '# Page\n\n<!-- results:page -->\n<!-- /results -->\n\ntext after\n'
    fresh = results_table.regenerate(text, md, records)
    self.assertIn('**22.04**', fresh)
    self.assertIn('**33.60**', fresh)
    self.assertTrue(fresh.endswith('text after\n'))
    self.assertEqual(results_table.regenerate(fresh, md, records), fresh)
    edited = fresh.replace('**22.04**', '**23.04**')
    self.assertNotEqual(results_table.regenerate(edited, md, records), edited)

  def test_page_lists_each_command_and_the_other_metrics(self):
    md = os.path.join(_REPO, 'docs', 'results', 'example.md')
    records = [_record('m/a', 22.04, metrics={'test/bleu': 22.04, 'test/chrf': 48.5}), _record('m/b', 1.0)]
    rows = results_table.render('page', md, records)
    self.assertEqual(
      rows[-3:],
      [
        '',
        '- model m/a: `python -m s2s_jax.main --config=X`; also `test/chrf` 48.50.',
        '- model m/b: `python -m s2s_jax.main --config=X`.',
      ],
    )
    text = '<!-- results:page -->\n<!-- /results -->\n'
    fresh = results_table.regenerate(text, md, records)
    edited = fresh.replace('--config=X`; also', '--config=Y`; also')
    self.assertNotEqual(results_table.regenerate(edited, md, records), edited)
    self.assertEqual(results_table.render('page', os.path.join(_REPO, 'docs', 'other.md'), records)[2:], [])

  def test_summary_holds_only_summary_records_and_links_their_page(self):
    readme = os.path.join(_REPO, 'README.md')
    records = [_record('m/a', 22.0), _record('m/b', 33.6, summary=False)]
    rows = results_table.render('summary', readme, records)
    self.assertLen(rows, 3)  # header, rule, one row
    self.assertIn('[model m/a](docs/results/example.md)', rows[2])
    self.assertIn('tutorial 20.60', rows[2])

  def test_speed_table_and_unknown_marker(self):
    rec = {
      'kind': 'speed',
      'name': 'speed/x',
      'page': 'docs/speed.md',
      'title': 'T',
      'command': 'c',
      'commit': 'abc',
      'date': 'd',
      'machine': 'm',
      'dot_peak_gflops': None,
      'columns': ['case', 'wall_s'],
      'rows': [{'case': 'a', 'wall_s': 1.5}],
      'source': 'run',
    }
    rows = results_table.render('speed=speed/x', os.path.join(_REPO, 'docs', 'speed.md'), [rec])
    self.assertEqual(rows[:3], ['| case | wall_s |', '|---|---|', '| a | 1.50 |'])
    with self.assertRaisesRegex(ValueError, 'no speed record'):
      results_table.render('speed=nope', 'docs/speed.md', [rec])
    with self.assertRaisesRegex(ValueError, 'unknown table'):
      results_table.render('bogus', 'docs/speed.md', [rec])

  def test_malformed_records_are_refused(self):
    folder = self.create_tempdir().full_path
    os.makedirs(os.path.join(folder, 'm'))
    os.makedirs(os.path.join(folder, 'blind'))
    with open(os.path.join(folder, 'blind', 'out.json'), 'w', encoding='utf-8') as f:
      f.write('not a record')  # ignored
    good = _record('m/a', 1.0)
    with open(os.path.join(folder, 'm', 'a.json'), 'w', encoding='utf-8') as f:
      json.dump(good, f)
    self.assertLen(results_table.load_records(folder), 1)
    for bad, message in (
      (dict(good, kind='x'), '"kind"'),
      ({k: v for k, v in good.items() if k != 'commit'}, 'missing commit'),
      (dict(good, source='typed by hand'), '"source"'),
      (dict(good, metric='test/chrf'), 'not among its metrics'),
      (dict(good, name='m/other'), 'the file must be'),
    ):
      with open(os.path.join(folder, 'm', 'a.json'), 'w', encoding='utf-8') as f:
        json.dump(bad, f)
      with self.assertRaisesRegex(ValueError, message):
        results_table.load_records(folder)


def _speed(**extra) -> dict:
  rec = {
    'kind': 'speed',
    'name': 'speed/x',
    'page': 'docs/speed.md',
    'title': 'T',
    'command': 'c',
    'commit': 'abc',
    'date': 'd',
    'machine': 'm',
    'dot_peak_gflops': None,
    'columns': ['config', 'ours', 'peer', 'ratio'],
    'rows': [{'config': 'a', 'ours': 1920, 'peer': 1472, 'ratio': 1.3}, {'config': 'b', 'ours': 800, 'peer': None}],
    'source': 'run',
  }
  rec.update(extra)
  return rec


class SpeedRecordTest(absltest.TestCase):
  def _json(self, content) -> str:
    path = self.create_tempfile('out.json').full_path
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(content, f)
    return path

  def test_benchmark_outputs_become_records(self):
    data = self._json([{'num_pairs': 1000, 'cold': {'to_training_s': 8.5}}, {'num_pairs': 10, 'cold': {}}])
    meta = {'commit': 'abc1234', 'date': '2026-12-06', 'machine': 'm', 'dot_peak_gflops': None}
    rec = results_table.speed_record(
      data, 'speed/d', 'docs/speed.md', 'T', 'c', '', ['num_pairs=pairs', 'cold.to_training_s=cold s'], meta
    )
    self.assertEqual(rec['rows'], [{'pairs': 1000, 'cold s': 8.5}, {'pairs': 10, 'cold s': None}])
    self.assertEqual((rec['commit'], rec['source'], rec['columns']), ('abc1234', 'run', ['pairs', 'cold s']))
    train = self._json({'target_tokens_per_s': 1629.4, 'jnp_dot_gflops': 172.0, 'date': '2026-11-30'})
    rec = results_table.speed_record(
      train, 'speed/t', 'p', 'T', 'c', '', ['target_tokens_per_s'], dict(meta, date=None)
    )
    self.assertEqual((rec['rows'], rec['dot_peak_gflops']), ([{'target_tokens_per_s': 1629.4}], 172.0))
    self.assertEqual(rec['date'], '2026-11-30')  # the JSON's own, where the flag is not given
    rows = self._json({'rows': [{'label': 'a'}, {'label': 'b'}, {'label': 'all', 'trials': []}]})
    rec = results_table.speed_record(rows, 'speed/r', 'p', 'T', 'c', 'rows.0:2', ['label'], meta)
    self.assertEqual(rec['rows'], [{'label': 'a'}, {'label': 'b'}])

  def test_bad_input_names_what_to_fix(self):
    path = self._json({'rows': [{'label': 'a'}]})
    meta = {'commit': 'abc', 'date': 'd', 'machine': None}
    with self.assertRaisesRegex(app.UsageError, 'give --machine'):
      results_table.speed_record(path, 'speed/r', 'p', 'T', 'c', 'rows', None, meta)
    with self.assertRaisesRegex(app.UsageError, 'no row has wall_s'):
      results_table.speed_record(path, 'speed/r', 'p', 'T', 'c', 'rows', ['wall_s'], dict(meta, machine='m'))
    with self.assertRaisesRegex(app.UsageError, 'nothing at --rows'):
      results_table.speed_record(path, 'speed/r', 'p', 'T', 'c', 'rows.7', None, dict(meta, machine='m'))

  def test_small_numbers_keep_three_decimals_and_a_peak_range_shows(self):
    rows = results_table.render('speed=speed/x', 'docs/speed.md', [_speed(dot_peak_gflops=[157, 173])])
    self.assertEqual(rows[2], '| a | 1,920 | 1,472 | 1.30 |')
    self.assertIn('`jnp.dot` 157-173 GFLOP/s', rows[-1])
    self.assertEqual([results_table._num(v) for v in (0.958, 0.079, 0.8, 0.0)], ['0.958', '0.079', '0.80', '0.00'])


class PlotsTest(absltest.TestCase):
  def test_plots_command_draws_the_speed_chart_under_out(self):
    out = self.create_tempdir().full_path
    script = os.path.join(_REPO, 'scripts', 'results_table.py')
    proc = subprocess.run(
      [sys.executable, script, 'plots', f'--out={out}'], capture_output=True, text=True, check=False
    )
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    path = os.path.join(out, 'docs', 'speed_vs_pytorch.png')
    self.assertIn(f'wrote {path}', proc.stdout)
    with open(path, 'rb') as f:
      self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    self.assertBetween(os.path.getsize(path), 5_000, 150_000)

  def test_curves_per_page_skip_records_without_wall_times(self):
    import results_plots  # pylint: disable=g-import-not-at-top

    out = self.create_tempdir().full_path
    records = [
      _record('m/a', 22.0, curve=[[100, 60.0, 10.0], [200, 130.0, 15.5]]),
      _record('m/b', 30.0, curve=[[100, None, 12.0]], source='README before the registry'),
      _record('m/c', 1.0, page='docs/results/other.md', curve=[]),
      _speed(plot={'file': 'docs/x.png', 'x': 'config', 'bars': ['ours', 'peer'], 'annotate': 'ratio'}),
    ]
    written, notes = results_plots.write_plots(records, out)
    self.assertEqual(
      written, [os.path.join(out, 'docs', 'x.png'), os.path.join(out, 'docs', 'results', 'example_curves.png')]
    )
    self.assertTrue(all(os.path.getsize(p) <= results_plots.MAX_BYTES for p in written))
    self.assertLen(notes, 2)
    self.assertIn('m/b: no learning curve drawn (its validation curve lacks wall times', notes[0])
    self.assertIn('m/c', notes[1])
    self.assertFalse(os.path.exists(os.path.join(out, 'docs', 'results', 'other_curves.png')))
    with self.assertRaisesRegex(ValueError, 'names speed, not among its columns'):
      results_plots.bar_chart(_speed(plot={'file': 'docs/x.png', 'x': 'config', 'bars': ['speed']}), out)


_LINK = re.compile(r'\]\(([^)\s]+)\)')


class LinksTest(absltest.TestCase):
  def test_every_relative_link_resolves(self):
    broken = []
    for path in results_table.markdown_files():
      with open(path, encoding='utf-8') as f:
        text = f.read()
      for target in _LINK.findall(text):
        if re.match(r'^[a-z]+:', target) or target.startswith('#'):
          continue
        file_part = target.split('#', 1)[0]
        if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), file_part))):
          broken.append(f'{os.path.relpath(path, _REPO)}: {target}')
    self.assertEqual(broken, [])


if __name__ == '__main__':
  absltest.main()
