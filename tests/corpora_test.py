"""Tests of s2s_jax.data.corpora on small slices of the real corpora in ../shared/data.

Every test copies the first lines of the files it needs into a temporary `data.manual_dir` and prepares into a
temporary `data.data_dir`; ../shared/data is only read. Where it is absent the tests skip, or fail when
S2S_REQUIRE_DATA=1 (CONVENTIONS §1). The network is never used: `urlopen` is replaced by a function that fails,
and the download tests serve the real slices through it.
"""

import collections
import contextlib
import dataclasses
import glob
import gzip
import hashlib
import io
import itertools
import os
import shutil
import subprocess
import sys
from unittest import mock
import zipfile

from absl.testing import absltest
from absl.testing import parameterized
import shared_data
from tensorflow_datasets.core import shuffle as tfds_shuffle

from s2s_jax import config_lib
from s2s_jax.data import corpora
from s2s_jax.data import raw_files
from s2s_jax.data import registry
from s2s_jax.data.datasets import multi30k
from s2s_jax.data.datasets import tatoeba

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_M30K_SIZES = {'train': 300, 'val': 50, 'test_2016_flickr': 40}
_M30K_SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test_2016_flickr'}
_M30K_LANGS = ('de', 'en', 'fr')


_M30K_DOWNLOADS = multi30k.SPEC.downloads


def _pairs(data_config):
  return corpora.load_pairs(registry.get(data_config.name), data_config)


def _builder(data_config):
  return registry.get(data_config.name).make_builder(data_config)


def _head(path: str, n: int, start: int = 0) -> list[str]:
  """Lines start..start+n of a raw file (plain or .gz), read independently of the code under test."""
  with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
    return [line.decode('utf-8').rstrip('\n') for line in itertools.islice(f, start, start + n)]


def _write(path: str, lines: list[str], ending: str = '\n') -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = ''.join(line + ending for line in lines).encode('utf-8')
  with (gzip.open if path.endswith('.gz') else open)(path, 'wb') as f:
    f.write(data)
  return path


def _fake_urlopen(served: dict[str, bytes], requested: list[str]):
  def urlopen(request, timeout=None):
    del timeout
    requested.append(request.full_url)
    return io.BytesIO(served[request.full_url])

  return urlopen


class _CorpusTest(parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.manual = self.create_tempdir('raw').full_path
    self.data_dir = self.create_tempdir('prepared').full_path
    self.urlopen = self.enter_context(
      mock.patch.object(
        raw_files.urllib.request, 'urlopen', side_effect=AssertionError('network used without data.download=True')
      )
    )

  def config(self, name: str, source_lang: str = '', target_lang: str = '', **kw):
    c = config_lib.base_config().data
    c.update(
      dict(
        dict(
          name=name, manual_dir=self.manual, data_dir=self.data_dir, source_lang=source_lang, target_lang=target_lang
        ),
        **kw,
      )
    )
    return c

  def prepared_files(self) -> dict[str, float]:
    return {
      os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
      for d, _, files in os.walk(self.data_dir)
      for f in files
      if '.array_record' in f
    }


class Multi30kTest(_CorpusTest):
  def setUp(self):
    super().setUp()
    src = shared_data.require(self, 'multi30k', 'task1', 'raw')
    self.raw = {}
    for stem, n in _M30K_SIZES.items():
      for lang in _M30K_LANGS:
        self.raw[stem, lang] = _head(os.path.join(src, f'{stem}.{lang}.gz'), n)
        _write(os.path.join(self.manual, 'task1', 'raw', f'{stem}.{lang}.gz'), self.raw[stem, lang])

  def expected(self, src: str, tgt: str) -> dict[str, list[tuple[str, str]]]:
    return {split: list(zip(self.raw[stem, src], self.raw[stem, tgt])) for split, stem in _M30K_SPLITS.items()}

  @parameterized.parameters(('de', 'en'), ('en', 'de'), ('de', 'fr'), ('fr', 'en'))
  def test_splits_sizes_and_pairs(self, src, tgt):
    pairs = _pairs(self.config('multi30k', src, tgt))
    self.assertEqual({s: len(p) for s, p in pairs.items()}, {'train': 300, 'validation': 50, 'test': 40})
    self.assertEqual(pairs, self.expected(src, tgt))
    self.assertEqual(os.listdir(os.path.join(self.data_dir, 's2s_multi30k')), ['-'.join(sorted((src, tgt)))])

  def test_first_pairs_verbatim(self):
    pairs = _pairs(self.config('multi30k', 'de', 'en'))
    self.assertEqual(
      pairs['train'][0],
      (
        'Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.',
        'Two young, White males are outside near many bushes.',
      ),
    )
    pairs = _pairs(self.config('multi30k', 'fr', 'de'))
    self.assertEqual(pairs['test'][0][0], 'Un homme avec un chapeau orange regardant quelque chose.')

  def test_both_directions_from_one_prepared_dataset(self):
    forward = _pairs(self.config('multi30k', 'de', 'en'))
    with mock.patch.object(corpora.Corpus, '_read', side_effect=AssertionError('prepared again')):
      backward = _pairs(self.config('multi30k', 'en', 'de'))
    self.assertEqual(backward, {s: [(t, s_) for s_, t in p] for s, p in forward.items()})
    self.assertEqual(os.listdir(os.path.join(self.data_dir, 's2s_multi30k')), ['de-en'])

  def test_preparing_twice_does_not_regenerate(self):
    first = _pairs(self.config('multi30k', 'de', 'en'))
    files = self.prepared_files()
    self.assertLen(files, 3)
    with mock.patch.object(corpora.Corpus, '_read', side_effect=AssertionError('prepared again')):
      self.assertEqual(_pairs(self.config('multi30k', 'de', 'en')), first)
    self.assertEqual(self.prepared_files(), files)

  def test_changed_raw_files_are_prepared_again(self):
    _pairs(self.config('multi30k', 'de', 'en'))
    for lang in ('de', 'en'):
      _write(os.path.join(self.manual, 'task1', 'raw', f'val.{lang}.gz'), self.raw['val', lang][:7])
    pairs = _pairs(self.config('multi30k', 'de', 'en'))
    self.assertEqual(pairs['validation'], self.expected('de', 'en')['validation'][:7])

  @parameterized.parameters(('de', 'de'), ('de', 'xx'), ('', ''), ('vi', 'en'))
  def test_wrong_or_equal_languages(self, src, tgt):
    with self.assertRaisesRegex(ValueError, 'two different codes of cs, de, en, fr'):
      _pairs(self.config('multi30k', src, tgt))

  def test_mismatched_line_counts(self):
    path = _write(os.path.join(self.manual, 'task1', 'raw', 'val.en.gz'), self.raw['val', 'en'][:49])
    with self.assertRaises(ValueError) as cm:
      _pairs(self.config('multi30k', 'de', 'en'))
    msg = str(cm.exception)
    for part in (path, path.replace('.en.gz', '.de.gz'), '49 lines', '50 lines'):
      self.assertIn(part, msg)

  def test_missing_folder_names_what_was_expected_where(self):
    missing = os.path.join(self.manual, 'nowhere')
    with self.assertRaises(FileNotFoundError) as cm:
      _pairs(self.config('multi30k', 'de', 'en', manual_dir=missing))
    msg = str(cm.exception)
    for part in (
      missing,
      'is missing',
      'data.manual_dir',
      'S2S_DATA_DIR',
      'task1/raw/train.de.gz',
      'task1/raw/test_2016_flickr.en.gz',
      'data.download=True',
    ):
      self.assertIn(part, msg)
    self.urlopen.assert_not_called()

  def test_missing_file_under_default_folder(self):
    os.remove(os.path.join(self.manual, 'task1', 'raw', 'test_2016_flickr.en.gz'))
    root = self.create_tempdir('root').full_path
    shutil.copytree(self.manual, os.path.join(root, 'multi30k'))
    with mock.patch.dict(os.environ, {'S2S_DATA_DIR': root}):
      c = self.config('multi30k', 'de', 'en', manual_dir=None)
      self.assertEqual(registry.get(c.name).manual_dir(c), os.path.join(root, 'multi30k'))
      with self.assertRaisesRegex(FileNotFoundError, r"S2S_DATA_DIR=.*lacks \['task1/raw/test_2016_flickr.en.gz'\]"):
        _pairs(c)

  def test_download_fetches_missing_files_into_data_dir(self):
    base = 'https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/'
    served = {
      base + f'{stem}.{lang}.gz': gzip.compress(''.join(l + '\n' for l in self.raw[stem, lang]).encode())
      for stem, lang in self.raw
    }
    requested = []
    self.urlopen.side_effect = _fake_urlopen(served, requested)
    empty = self.create_tempdir('empty').full_path
    # This server's files are shortened: their checksums stand in for the official ones.
    sums = {url.rsplit('/', 1)[1]: hashlib.sha256(data).hexdigest() for url, data in served.items()}
    shortened = {
      rel: dataclasses.replace(d, sha256=sums[os.path.basename(rel)])
      for rel, d in _M30K_DOWNLOADS.items()
      if os.path.basename(rel) in sums
    }
    self.enter_context(mock.patch.dict(_M30K_DOWNLOADS, shortened))
    pairs = _pairs(self.config('multi30k', 'en', 'fr', manual_dir=empty, download=True))
    self.assertEqual(pairs, self.expected('en', 'fr'))
    self.assertLen(requested, 6)
    self.assertEqual(
      sorted(os.listdir(os.path.join(self.data_dir, 'downloads', 'multi30k', 'task1', 'raw'))),
      sorted(f'{stem}.{lang}.gz' for stem in _M30K_SIZES for lang in ('en', 'fr')),
    )
    self.assertEqual(os.listdir(empty), [])

  def test_tfds_reads_a_prepared_dataset(self):
    forward = _pairs(self.config('multi30k', 'de', 'en'))
    pairs = _pairs(self.config('tfds', 'en', 'de', tfds_name='s2s_multi30k/de-en'))
    self.assertEqual(pairs, {s: [(t, s_) for s_, t in p] for s, p in forward.items()})
    with self.assertRaisesRegex(ValueError, 'two different codes of de, en'):
      _pairs(self.config('tfds', 'en', 'fr', tfds_name='s2s_multi30k/de-en'))

  @parameterized.parameters('s2s_multi30k/cs-en', 'no_such_dataset_xyz/de-en')
  def test_tfds_not_prepared(self, name):
    with self.assertRaises(ValueError) as cm:
      _pairs(self.config('tfds', 'de', 'en', tfds_name=name))
    msg = str(cm.exception)
    self.assertIn(f'{name!r} is not prepared as array_record in data.data_dir={self.data_dir}', msg)
    self.assertLess(len(msg), 1000)  # not TFDS' whole catalogue


class TatoebaTest(_CorpusTest):
  def setUp(self):
    super().setUp()
    self.lines = _head(shared_data.require(self, 'tatoeba_fra_eng', 'fra.txt.gz'), 3000)
    self.raw = [tuple(line.split('\t')[:2]) for line in self.lines]
    _write(os.path.join(self.manual, 'fra.txt.gz'), self.lines)

  def test_splits_sizes_and_pairs(self):
    pairs = _pairs(self.config('tatoeba', 'en', 'fr'))
    # Pinned: the split rule must never change silently (it would mix evaluation data into training).
    self.assertEqual({s: len(p) for s, p in pairs.items()}, {'train': 2879, 'validation': 60, 'test': 61})
    self.assertEqual(pairs['train'][0], ('Go.', 'Va !'))
    for split, split_pairs in pairs.items():
      self.assertEqual(split_pairs, [p for p in self.raw if tatoeba.tatoeba_split(p[0]) == split])  # file order
    backward = _pairs(self.config('tatoeba', 'fr', 'en'))
    self.assertEqual(backward, {s: [(t, s_) for s_, t in p] for s, p in pairs.items()})

  def test_split_is_deterministic_and_english_sentences_disjoint(self):
    pairs = _pairs(self.config('tatoeba', 'en', 'fr'))
    self.data_dir = self.create_tempdir('again').full_path
    self.assertEqual(_pairs(self.config('tatoeba', 'en', 'fr')), pairs)
    english = {s: {' '.join(en.lower().split()) for en, _ in p} for s, p in pairs.items()}
    for a, b in itertools.combinations(english, 2):
      self.assertEmpty(english[a] & english[b], msg=f'{a} and {b} share English sentences')
    repeated = [en for en, n in collections.Counter(e for e, _ in self.raw).items() if n > 1]
    self.assertNotEmpty(repeated)  # the slice has sentences with several translations, all in one split
    self.assertEqual(tatoeba.tatoeba_split('Go.'), tatoeba.tatoeba_split('  GO. '))

  def test_wrong_language(self):
    with self.assertRaisesRegex(ValueError, "two different codes of en, fr; got 'de' and 'fr'"):
      _pairs(self.config('tatoeba', 'de', 'fr'))

  def test_line_without_tab(self):
    path = _write(os.path.join(self.manual, 'fra.txt.gz'), self.lines[:2] + ['no tab here'] + self.lines[3:10])
    with self.assertRaisesRegex(ValueError, f'{path}:3: expected English<TAB>French'):
      _pairs(self.config('tatoeba', 'en', 'fr'))

  def test_download_reads_the_first_two_fields_of_the_zip(self):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as z:
      z.writestr(
        'fra.txt', ''.join(f'{en}\t{fr}\tCC-BY 2.0 (France) Attribution: tatoeba.org\n' for en, fr in self.raw)
      )
      z.writestr('_about.txt', 'about')
    requested = []
    self.urlopen.side_effect = _fake_urlopen({'https://www.manythings.org/anki/fra-eng.zip': buf.getvalue()}, requested)
    pairs = _pairs(self.config('tatoeba', 'en', 'fr', manual_dir=self.manual + '_absent', download=True))
    self.assertEqual(sorted(p for split in pairs.values() for p in split), sorted(self.raw))
    self.assertTrue(os.path.isfile(os.path.join(self.data_dir, 'downloads', 'tatoeba', 'fra.txt.gz')))
    _pairs(self.config('tatoeba', 'en', 'fr', manual_dir=self.manual + '_absent', download=True))
    self.assertLen(requested, 1)


class Iwslt15Test(_CorpusTest):
  def setUp(self):
    super().setUp()
    src = shared_data.require(self, 'iwslt15_en_vi')
    self.raw = {}
    for stem, n in (('tst2012', 300), ('tst2013', 200)):
      for lang in ('en', 'vi'):
        self.raw[stem, lang] = _head(os.path.join(src, f'{stem}.{lang}'), n)
        _write(os.path.join(self.manual, f'{stem}.{lang}'), self.raw[stem, lang])

  def test_without_train_files(self):
    c = self.config('iwslt15', 'en', 'vi')
    pairs = _pairs(c)
    self.assertEqual(sorted(pairs), ['test', 'validation'])
    self.assertEqual(pairs['validation'], list(zip(self.raw['tst2012', 'en'], self.raw['tst2012', 'vi'])))
    self.assertEqual(pairs['test'], list(zip(self.raw['tst2013', 'en'], self.raw['tst2013', 'vi'])))
    self.assertTrue(pairs['test'][0][0].startswith('When I was little , I thought my country was the best'))
    self.assertIs(corpora.require_split(registry.get(c.name), pairs, 'test', c), pairs['test'])
    with self.assertRaises(ValueError) as cm:
      corpora.require_split(registry.get(c.name), pairs, 'train', c)
    msg = str(cm.exception)
    for part in (
      "no 'train' split",
      "['train.en', 'train.vi']",
      self.manual,
      'S2S_DATA_DIR/iwslt15_en_vi',
      'data.download=True',
      'nlp.stanford.edu',
    ):
      self.assertIn(part, msg)

  def test_train_files_added_later(self):
    backward = _pairs(self.config('iwslt15', 'vi', 'en'))
    self.assertNotIn('train', backward)
    # Stand-in train files (the real ones are not in ../shared/data): further real lines of tst2012.
    src = shared_data.require(self, 'iwslt15_en_vi')
    train = {lang: _head(os.path.join(src, f'tst2012.{lang}'), 120, start=300) for lang in ('en', 'vi')}
    for lang, lines in train.items():
      _write(os.path.join(self.manual, f'train.{lang}'), lines)
    pairs = _pairs(self.config('iwslt15', 'vi', 'en'))
    self.assertEqual(pairs['train'], list(zip(train['vi'], train['en'])))
    self.assertEqual(pairs['validation'], backward['validation'])

  def test_missing_dev_file(self):
    os.remove(os.path.join(self.manual, 'tst2012.vi'))
    with self.assertRaisesRegex(FileNotFoundError, r"lacks \['tst2012.vi'\]"):
      _pairs(self.config('iwslt15', 'en', 'vi'))
    self.urlopen.assert_not_called()


class DownloadChecksumTest(absltest.TestCase):
  def test_official_files_must_match_their_known_sha256(self):
    path = shared_data.require(self, 'multi30k', 'task1', 'raw', 'val.de.gz')
    with open(path, 'rb') as f:
      data = f.read()
    official = multi30k.SPEC.downloads['task1/raw/val.de.gz']
    raw_files.check_download(official, 'val.de.gz', data, 'multi30k')  # the official file
    with self.assertRaisesRegex(
      ValueError,
      r'The download of val.de.gz \(multi30k\) has sha256 \w+, not the '
      r"official file's f0cba2f9",
    ):
      raw_files.check_download(official, 'val.de.gz', data[:-1], 'multi30k')
    raw_files.check_download(tatoeba.SPEC.downloads['fra.txt.gz'], 'fra.txt.gz', b'anything', 'tatoeba')  # no sum


class ParallelTextTest(_CorpusTest):
  def setUp(self):
    super().setUp()
    src = shared_data.require(self, 'multi30k', 'task1', 'raw')
    self.de, self.en = (_head(os.path.join(src, f'val.{lang}.gz'), 60) for lang in ('de', 'en'))
    self.tsv = [tuple(l.split('\t')) for l in _head(shared_data.require(self, 'tatoeba_fra_eng', 'fra.txt.gz'), 40)]
    self.dir = self.create_tempdir('files').full_path
    _write(os.path.join(self.dir, 'a.de'), self.de[:30])
    _write(os.path.join(self.dir, 'a.en'), self.en[:30], ending='\r\n')
    _write(os.path.join(self.dir, 'b.de.gz'), self.de[30:])
    _write(os.path.join(self.dir, 'b.en.gz'), self.en[30:])
    _write(os.path.join(self.dir, 'c.tsv'), ['\t'.join(p) for p in self.tsv])

  def test_plain_gz_and_tsv_with_relative_paths(self):
    with contextlib.chdir(self.dir):
      pairs = _pairs(self.config('parallel_text', files='train=a.de,a.en;validation=b.de.gz,b.en.gz;test=c.tsv'))
    self.assertEqual(
      pairs,
      {
        'train': list(zip(self.de[:30], self.en[:30])),
        'validation': list(zip(self.de[30:], self.en[30:])),
        'test': self.tsv,
      },
    )
    self.assertIsNone(registry.get('parallel_text').manual_dir(self.config('parallel_text')))
    self.assertEqual(
      raw_files.resolve_files(f'train={self.dir}/a.de, {self.dir}/a.en'),
      {'train': (os.path.join(self.dir, 'a.de'), os.path.join(self.dir, 'a.en'))},
    )

  def test_a_split_larger_than_the_shuffle_buffer_prepares_without_tensorflow(self):
    # Above tfds' in-memory buffer (1 GB; a few hundred bytes here) examples are spilled to bucket files through
    # `tf.io.gfile`; without TensorFlow (the CI environment) builders.py provides local files for it.
    with mock.patch.object(tfds_shuffle, 'MAX_MEM_BUFFER_SIZE', 500):
      pairs = _pairs(self.config('parallel_text', files=f'train={self.dir}/c.tsv'))
    self.assertEqual(pairs, {'train': self.tsv})  # every pair, in file order
    self.assertEqual(glob.glob(os.path.join(self.data_dir, '**', '*bucket*'), recursive=True), [])  # spills removed

  def test_empty_lines_are_kept(self):
    _write(os.path.join(self.dir, 'e.de'), ['eins', '', 'drei'])
    _write(os.path.join(self.dir, 'e.en'), ['one', 'two', ''])
    pairs = _pairs(self.config('parallel_text', files=f'train={self.dir}/e.de,{self.dir}/e.en'))
    self.assertEqual(pairs, {'train': [('eins', 'one'), ('', 'two'), ('drei', '')]})

  def test_mismatched_line_counts(self):
    _write(os.path.join(self.dir, 'a.en'), self.en[:29])
    with self.assertRaisesRegex(ValueError, f'{self.dir}/a.de: 30 lines, {self.dir}/a.en: 29 lines'):
      _pairs(self.config('parallel_text', files=f'train={self.dir}/a.de,{self.dir}/a.en'))

  def test_invalid_utf8_names_file_and_line(self):
    path = os.path.join(self.dir, 'bad.en')
    with open(path, 'wb') as f:
      f.write(b'fine\nalso fine\nbroken \xff\xfe here\n')
    _write(os.path.join(self.dir, 'bad.de'), ['a', 'b', 'c'])
    with self.assertRaisesRegex(ValueError, f'{path}:3: invalid UTF-8'):
      _pairs(self.config('parallel_text', files=f'train={self.dir}/bad.de,{path}'))

  def test_tsv_line_without_tab(self):
    path = _write(os.path.join(self.dir, 'd.tsv'), ['\t'.join(p) for p in self.tsv[:4]] + ['no tab'])
    with self.assertRaisesRegex(ValueError, f'{path}:5: expected source<TAB>target'):
      _pairs(self.config('parallel_text', files=f'train={path}'))

  def test_tsv_line_with_a_tab_inside_a_sentence(self):
    path = _write(os.path.join(self.dir, 'f.tsv'), ['\t'.join(p) for p in self.tsv[:3]] + ['ein Satz\tone\tsentence'])
    with self.assertRaisesRegex(ValueError, f'{path}:4: expected source<TAB>target \\(exactly one TAB\\), found 2'):
      _pairs(self.config('parallel_text', files=f'train={path}'))

  def test_config_name_changes_when_a_file_changes(self):
    c = self.config('parallel_text', files=f'train={self.dir}/a.de,{self.dir}/a.en')
    name = _builder(c).builder_config.name
    self.assertEqual(_builder(c).builder_config.name, name)
    self.assertEqual(_pairs(c)['train'][0], (self.de[0], self.en[0]))
    path = _write(os.path.join(self.dir, 'a.en'), ['changed'] + self.en[1:30])
    os.utime(path, ns=(1, 1))
    self.assertNotEqual(_builder(c).builder_config.name, name)
    self.assertEqual(_pairs(c)['train'][0], (self.de[0], 'changed'))
    other = self.config('parallel_text', files=f'train={self.dir}/b.de.gz,{self.dir}/b.en.gz')
    self.assertNotEqual(_builder(other).builder_config.name, name)

  def test_processes_preparing_at_once_all_see_every_split(self):
    # Parallel sweep runs share data.data_dir: a process that made its builder while another was preparing used
    # to find no splits. Four processes start together on a 3,000-line corpus; each must read all of it.
    n = 3000
    _write(os.path.join(self.dir, 'big.de'), [f'{self.de[i % 60]} {i}' for i in range(n)])
    _write(os.path.join(self.dir, 'big.en'), [f'{self.en[i % 60]} {i}' for i in range(n)])
    files = f'train={self.dir}/big.de,{self.dir}/big.en;validation={self.dir}/b.de.gz,{self.dir}/b.en.gz'
    script = (
      'import sys\n'
      'from s2s_jax import config_lib\n'
      'from s2s_jax.data import corpora, registry\n'
      'c = config_lib.base_config().data\n'
      'c.update(name="parallel_text", files=sys.argv[1], data_dir=sys.argv[2])\n'
      'print({k: len(v) for k, v in sorted(corpora.load_pairs(registry.get(c.name), c).items())})\n'
    )
    procs = [
      subprocess.Popen(
        [sys.executable, '-c', script, files, self.data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=_REPO_ROOT,
      )
      for _ in range(4)
    ]
    for proc in procs:
      out, err = proc.communicate(timeout=300)
      self.assertEqual(proc.returncode, 0, err[-2000:])
      self.assertEqual(out.strip().splitlines()[-1], "{'train': 3000, 'validation': 30}")

  @parameterized.parameters('', 'train=a,b,c', 'train', 'train=x.de,x.en', 'tr ain=c.tsv', 'test=c.tsv;test=c.tsv')
  def test_bad_files_spec(self, spec):
    with contextlib.chdir(self.dir), self.assertRaisesRegex((ValueError, FileNotFoundError), 'data.files'):
      _pairs(self.config('parallel_text', files=spec))


class DataRootTest(absltest.TestCase):
  def test_default_data_root_is_independent_of_the_cwd(self):
    expected = os.path.abspath(os.path.join(_REPO_ROOT, '..', 'shared', 'data'))
    with mock.patch.dict(os.environ):
      os.environ.pop('S2S_DATA_DIR', None)
      self.assertEqual(raw_files.default_data_root(), expected)
      with contextlib.chdir(self.create_tempdir().full_path):
        self.assertEqual(raw_files.default_data_root(), expected)
        c = config_lib.base_config().data
        c.name = 'tatoeba'
        self.assertEqual(registry.get(c.name).manual_dir(c), os.path.join(expected, 'tatoeba_fra_eng'))
      os.environ['S2S_DATA_DIR'] = '/some/where'
      self.assertEqual(raw_files.default_data_root(), '/some/where')
    self.assertEqual(
      {d.name: d.folder for d in registry.SPECS if d.folder and d.source == 'text'},
      {'multi30k': 'multi30k', 'tatoeba': 'tatoeba_fra_eng', 'iwslt15': 'iwslt15_en_vi', 'aeslc': 'aeslc'},
    )  # CONVENTIONS §4


if __name__ == '__main__':
  absltest.main()
