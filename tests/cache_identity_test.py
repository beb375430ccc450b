"""The data identity (issue 25, item 1): which file is which side of which split, the direction, and a TFDS
dataset's preparation enter both cache keys (vocab_cache, id_cache) and the fingerprint of provenance.json.

Real data throughout, tiny and generated in temp dirs: parallel text files, a Tatoeba-format `fra.txt.gz`, IWSLT'15
files and a TFDS dataset prepared as array_record by a builder defined here. A run is a `pipeline.prepare` with a
fresh workdir vocabulary folder (what `main` does at start), so each case takes a second or two.
"""

import glob
import gzip
import json
import os
import shutil
import types

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow_datasets as tfds
import testutil

from s2s_jax import config_lib
from s2s_jax import workdir as workdir_lib
from s2s_jax.data import builders
from s2s_jax.data import id_cache
from s2s_jax.data import pipeline
from s2s_jax.data import vocab as vocab_lib

# The data_sha256 that the code before issue 25 (commit 6b3a77f) recorded in provenance.json for _iwslt_files():
# obtained by training `experiments/default.py:size=tiny` with data.name=iwslt15, data.source_lang=en,
# data.target_lang=vi and data.manual_dir=<a folder written by _iwslt_files> from a `git worktree` of 6b3a77f
# (its provenance.json's data_sha256; the same value as its pipeline.prepare(...).fingerprint).
_OLD_CODE_IWSLT_SHA256 = '484cdc7d530a62ef0c445e02ed337fcd2767d327495c228c65df7fb5fc5c20f3'


def _write_lines(path: str, lines: list[str]) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = ''.join(line + '\n' for line in lines).encode('utf-8')
  if path.endswith('.gz'):
    data = gzip.compress(data, mtime=0)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def _parallel_files(folder: str) -> dict[str, list[str]]:
  """a / b / c .de / .en: German and English sides (disjoint words), each pair of files with other sentences."""
  lines = {}
  for stem, n in (('a', 40), ('b', 6), ('c', 5)):
    lines[f'{stem}.de'] = [f'hund {stem}{i} katze' for i in range(n)]
    lines[f'{stem}.en'] = [f'dog {stem}{i} cat' for i in range(n)]
  for name, text in lines.items():
    _write_lines(os.path.join(folder, name), text)
  return lines


def _iwslt_files(folder: str) -> None:
  """A tiny IWSLT'15 folder (plain files, fixed bytes: its old-form fingerprint is reproducible)."""
  for stem, n in (('train', 30), ('tst2012', 5), ('tst2013', 4)):
    _write_lines(os.path.join(folder, f'{stem}.en'), [f'the {stem} sentence {i}' for i in range(n)])
    _write_lines(os.path.join(folder, f'{stem}.vi'), [f'cau {stem} so {i}' for i in range(n)])


def _data_config(data_dir: str, **fields):
  c = config_lib.base_config().data
  c.update(data_dir=data_dir, tokenizer='word', num_buckets=0, batch_size=4, max_src_len=20, max_tgt_len=20)
  c.update(**fields)
  pipeline.resolve_paths(c)
  return c


class _Test(parameterized.TestCase):
  def setUp(self):
    super().setUp()
    self.raw = self.create_tempdir('raw').full_path
    self.data_dir = self.create_tempdir('data').full_path

  def run_start(self, **fields) -> tuple[pipeline.PreparedData, str]:
    """What a new run does at start: prepare the data into a fresh workdir (vocab.{src,tgt}.json)."""
    workdir = self.create_tempdir().full_path
    data = pipeline.prepare(_data_config(self.data_dir, **fields), workdir, for_training=True)
    return data, workdir

  def id_folders(self) -> list[str]:
    return sorted(glob.glob(os.path.join(self.data_dir, id_cache.FOLDER, '*')))


class ParallelTextTest(_Test):
  def setUp(self):
    super().setUp()
    self.lines = _parallel_files(self.raw)

  def files(self, spec: str) -> str:
    """'train=a.de,a.en;...' with the names made absolute."""
    return ';'.join(
      f'{split}={",".join(os.path.join(self.raw, n) for n in names.split(","))}'
      for split, names in (item.split('=') for item in spec.split(';'))
    )

  def test_swapped_sides_are_other_caches_and_vocabularies(self):  # (a)
    de_en, _ = self.run_start(
      name='parallel_text', files=self.files('train=a.de,a.en;validation=b.de,b.en;test=c.de,c.en')
    )
    en_de, workdir = self.run_start(
      name='parallel_text', files=self.files('train=a.en,a.de;validation=b.en,b.de;test=c.en,c.de')
    )
    self.assertLen(self.id_folders(), 2)
    self.assertNotEqual(de_en.fingerprint, en_de.fingerprint)
    src_tokens = set(vocab_lib.load(os.path.join(workdir, 'vocab.src.json')).tokens)
    self.assertIn('dog', src_tokens)  # the en->de run's source vocabulary is English
    self.assertNotIn('hund', src_tokens)
    for split, stem in (('train', 'a'), ('validation', 'b'), ('test', 'c')):
      self.assertEqual(list(en_de.splits[split].sources), self.lines[f'{stem}.en'])
      self.assertEqual(list(en_de.splits[split].targets), self.lines[f'{stem}.de'])
      self.assertEqual(list(de_en.splits[split].sources), self.lines[f'{stem}.de'])

  def test_swapped_evaluation_files_are_another_cache(self):  # (a)
    self.run_start(name='parallel_text', files=self.files('train=a.de,a.en;validation=b.de,b.en;test=c.de,c.en'))
    swapped, _ = self.run_start(
      name='parallel_text', files=self.files('train=a.de,a.en;validation=c.de,c.en;test=b.de,b.en')
    )
    self.assertLen(self.id_folders(), 2)
    self.assertEqual(list(swapped.splits['validation'].targets), self.lines['c.en'])
    self.assertEqual(list(swapped.splits['test'].targets), self.lines['b.en'])
    self.assertEqual(swapped.splits['test'].reference_streams(), [self.lines['b.en']])

  def test_a_renamed_test_split_is_read_and_checked_before_training(self):  # (d)
    self.run_start(name='parallel_text', files=self.files('train=a.de,a.en;validation=b.de,b.en;test=c.de,c.en'))
    renamed = self.files('train=a.de,a.en;validation=b.de,b.en;test2016=c.de,c.en')
    data, _ = self.run_start(name='parallel_text', files=renamed, test_splits='test2016')
    self.assertEqual(sorted(data.splits), ['test2016', 'train', 'validation'])
    self.assertEqual(list(data.splits['test2016'].targets), self.lines['c.en'])
    self.assertEqual(list(data.report['splits']), list(data.splits))
    with self.assertRaisesRegex(ValueError, r"data.test_splits names 'test', .*its splits are test2016, train"):
      self.run_start(name='parallel_text', files=renamed)  # the default test split: refused before training


class NamedCorpusTest(_Test):
  @parameterized.parameters('char', 'word')
  def test_tatoeba_shared_vocabulary_in_both_directions(self, tokenizer):  # (b)
    pairs = [(f'go home {i}', f'rentre chez toi {i}') for i in range(300)]
    _write_lines(os.path.join(self.raw, 'fra.txt.gz'), [f'{en}\t{fr}\tCC-BY 2.0 (France)' for en, fr in pairs])
    common = dict(name='tatoeba', manual_dir=self.raw, shared_vocab=True, tokenizer=tokenizer)
    common.update(max_src_len=40, max_tgt_len=40)
    en_fr, _ = self.run_start(source_lang='en', target_lang='fr', **common)
    fr_en, _ = self.run_start(source_lang='fr', target_lang='en', **common)
    self.assertEqual(en_fr.frontend.tokens, fr_en.frontend.tokens)  # one shared vocabulary (so equal hashes)
    self.assertLen(self.id_folders(), 2)
    self.assertNotEqual(en_fr.fingerprint, fr_en.fingerprint)
    en_fr_train = en_fr.splits['train']
    fr_en_train = fr_en.splits['train']
    self.assertTrue(all(s.startswith('go home') for s in en_fr_train.sources))
    self.assertTrue(all(s.startswith('rentre') for s in fr_en_train.sources))
    self.assertTrue(all(t.startswith('go home') for t in fr_en_train.targets))
    encoded = [en_fr.frontend.encode(s) for s in fr_en_train.sources[:5]]
    for ids, want in zip(fr_en_train.src_ids[:5], encoded):  # the fr->en ids encode French sources
      self.assertEqual(list(ids[: len(want)]), list(want))

  def test_an_old_workdir_resumes_and_records_the_new_identity(self):
    _iwslt_files(self.raw)
    config = testutil.tiny_config(self.data_dir)
    config.data.update(name='iwslt15', manual_dir=self.raw, source_lang='en', target_lang='vi', tokenizer='word')
    pipeline.resolve_paths(config.data)
    workdir = self.create_tempdir('run').full_path
    data = pipeline.prepare(config.data, workdir, for_training=True)
    legacy = builders.legacy_fingerprint(data.manifest)
    self.assertEqual(legacy, data.legacy_fingerprint)
    self.assertEqual(legacy, _OLD_CODE_IWSLT_SHA256)  # what the old code wrote for these files
    self.assertNotEqual(data.fingerprint, legacy)
    # The workdir as the old code left it: its provenance.json without data_identity, data_sha256 the old form.
    workdir_lib.check_and_write(workdir, config, data, allow_config_change=False)
    path = os.path.join(workdir, 'provenance.json')
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
    del old['data_identity']
    old.update(data_sha256=legacy, data_history=[{'data_sha256': legacy, 'from_step': 0}])
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(old, f)
    workdir_lib.check_and_write(workdir, config, data, allow_config_change=False)  # resumes: no refusal
    with open(path, encoding='utf-8') as f:
      new = json.load(f)
    self.assertEqual(new['data_sha256'], data.fingerprint)
    self.assertEqual(new['data_identity'], data.identity)
    self.assertEqual(builders.fingerprint(new['data_identity']), new['data_sha256'])
    self.assertEqual(
      new['data_history'], [{'data_sha256': data.fingerprint, 'from_step': 0, 'legacy_data_sha256': legacy}]
    )
    workdir_lib.check_and_write(workdir, config, data, allow_config_change=False)  # and again, in the new form
    # An old workdir whose old-form fingerprint is not today's data's is refused, as before.
    old.update(data_sha256='0' * 64, data_history=[{'data_sha256': '0' * 64, 'from_step': 0}])
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(old, f)
    with self.assertRaisesRegex(ValueError, 'The data changed since this run started'):
      workdir_lib.check_and_write(workdir, config, data, allow_config_change=False)


class _TinyTfds(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A TFDS dataset prepared outside the project (data.name='tfds'), its rows set by the test."""

  name = 's2s_test_tiny_tfds'
  VERSION = tfds.core.Version('1.0.0')
  ROWS: list[tuple[str, str]] = []

  def _info(self):
    features = tfds.features.FeaturesDict({'de': tfds.features.Text(), 'en': tfds.features.Text()})
    return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples() for split in ('train', 'validation', 'test')}

  def _generate_examples(self):
    for i, (de, en) in enumerate(self.ROWS):
      yield i, {'de': de, 'en': en}


def _tiny_tfds(rows, version: str = '1.0.0') -> type[_TinyTfds]:
  """The builder of _TinyTfds at `version` with `rows` (each split the same rows)."""
  fields = {'name': _TinyTfds.name, 'VERSION': tfds.core.Version(version), 'ROWS': rows}
  return types.new_class('_TinyTfdsAt', (_TinyTfds,), {'skip_registration': True}, lambda ns: ns.update(fields))


class TfdsTest(_Test):
  def prepare_tfds(self, rows, version: str = '1.0.0') -> None:
    _tiny_tfds(rows, version)(data_dir=self.data_dir, file_format='array_record').download_and_prepare()

  def run_tfds(self) -> pipeline.PreparedData:
    fields = dict(name='tfds', tfds_name=_TinyTfds.name, source_lang='de', target_lang='en')
    return self.run_start(**fields)[0]

  def test_a_tfds_dataset_prepared_again_or_newer_is_other_data(self):  # (c)
    self.prepare_tfds([(f'hund {i}', f'dog {i}') for i in range(20)])
    first = self.run_tfds()
    self.assertEqual(first.splits['train'].targets[0], 'dog 0')
    folder = os.path.join(self.data_dir, _TinyTfds.name, '1.0.0')
    with open(os.path.join(folder, 'dataset_info.json'), encoding='utf-8') as f:
      info = f.read()
    shutil.rmtree(folder)
    self.prepare_tfds([(f'maus {i}', f'cat {i}') for i in range(20)])  # again in place: every size the same
    with open(os.path.join(folder, 'dataset_info.json'), encoding='utf-8') as f:
      self.assertEqual(f.read(), info)
    again = self.run_tfds()
    self.assertEqual(list(again.splits['train'].targets), [f'cat {i}' for i in range(20)])
    self.assertNotEqual(again.fingerprint, first.fingerprint)
    shutil.rmtree(folder)
    self.prepare_tfds([(f'hund {i}', f'dog {i}') for i in range(25)])  # again in place, other sizes
    self.assertLen(self.run_tfds().splits['train'], 25)
    self.prepare_tfds([(f'vogel {i}', f'bird {i}') for i in range(7)], version='1.0.1')  # newer, beside it
    newer = self.run_tfds()
    self.assertEqual(list(newer.splits['train'].targets), [f'bird {i}' for i in range(7)])
    self.assertLen({first.fingerprint, again.fingerprint, newer.fingerprint}, 3)
    self.assertEqual((first.identity['version'], newer.identity['version']), ('1.0.0', '1.0.1'))


if __name__ == '__main__':
  absltest.main()
