"""The results registry: committed tables equal what results/ generates, records are checked, links resolve."""

import json
import os
import re
import sys

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
