"""The dataset registry: every data.name, its family, source kind and loaders; config validation through it."""

import json
import os
import random
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import train
from s2s_jax.data import pipeline
from s2s_jax.data import registry
from s2s_jax.data import synthetic
from s2s_jax.data.datasets import generated

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import default  # pylint: disable=g-import-not-at-top,wrong-import-position


class RegistryTest(parameterized.TestCase):
  def test_generated_tasks_are_the_synthetic_ones(self):
    self.assertEqual(tuple(d.name for d in generated.SPECS), synthetic.TASKS)
    self.assertEqual(registry.NAMES[: len(synthetic.TASKS)], synthetic.TASKS)

  @parameterized.parameters(*registry.NAMES)
  def test_specs_are_complete(self, name):
    dataset = registry.get(name)
    self.assertIn(dataset.source, registry.SOURCE_KINDS)
    self.assertTrue(callable(dataset.reader), name)
    self.assertTrue(dataset.builder is None or callable(dataset.builder), name)
    if dataset.source == 'text':
      self.assertTrue(callable(dataset.sources), name)
    self.assertIs(registry.get(name), dataset)

  def test_input_kinds(self):
    self.assertEqual(
      {n: registry.get(n).input_kind for n in ('multi30k', 'dates', 'fsdd', 'digits_captions')},
      {'multi30k': 'tokens', 'dates': 'tokens', 'fsdd': 'frames', 'digits_captions': 'image'},
    )
    self.assertEqual(config_checks.DATASETS, registry.NAMES)

  def test_unknown_name(self):
    with self.assertRaisesRegex(ValueError, r"data.name='wmt' is not one of \('dates'"):
      registry.get('wmt')

  @parameterized.parameters(
    ('tfds', {'source_lang': 'de', 'target_lang': 'en'}, r"data.name='tfds' needs data.tfds_name"),
    ('tfds', {'tfds_name': 'x/y'}, r"data.name='tfds' needs data.source_lang and data.target_lang"),
    ('iwslt15', {'source_lang': 'en'}, r"data.name='iwslt15' needs data.source_lang and data.target_lang"),
    ('image_folder', {}, r"data.name='image_folder' needs data.files, e.g. 'train=captions.tsv"),
    ('audio_folder', {}, r"data.name='audio_folder' needs data.files, e.g. 'train=train.tsv"),
    ('parallel_text', {}, r"data.name='parallel_text' needs data.files, e.g. 'train=a.de,a.en"),
  )
  def test_validation_names_what_a_dataset_needs(self, name, fields, message):
    config = config_lib.base_config()
    config.data.update(name=name, **fields)
    with self.assertRaisesRegex(ValueError, message):
      config_checks.validate(config)

  def test_config_lib_does_not_import_tfds(self):
    """Loading an experiment file stays light: config_lib and its validation read the registry, which imports no
    dataset builder and no heavy library (the spec modules import them inside their functions)."""
    script = (
      'import sys; import s2s_jax.config_lib, s2s_jax.config_checks; '
      's2s_jax.config_checks.validate(s2s_jax.config_lib.base_config()); '
      'prefixes = ("tensorflow_datasets", "grain", "soundfile", "sklearn", "s2s_jax.data."); '
      'print(sorted(m for m in sys.modules if m.startswith(prefixes)))'
    )
    out = subprocess.run(
      [sys.executable, '-c', script],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=True,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'),
    ).stdout
    for heavy in ('tensorflow_datasets', 'grain', 'soundfile', 'sklearn', 's2s_jax.data.corpora'):
      self.assertNotIn(f"'{heavy}", out)
    self.assertIn('s2s_jax.data.registry', out)
    self.assertIn('s2s_jax.data.datasets.fsdd', out)


# A dataset of one's own, as docs/adding_a_dataset.md writes it: a module outside s2s_jax that declares a spec.
_OWN_MODULE = '''"""My TSV corpus: train.tsv, valid.tsv and test.tsv in one folder, lines SOURCE<TAB>TARGET."""

import os

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family

_FILES = {'train': 'train.tsv', 'validation': 'valid.tsv', 'test': 'test.tsv'}


def _read(config):
  """split -> feature -> lines: what the prepared dataset holds."""
  out = {}
  for split, name in _FILES.items():
    sources, targets = raw_files.tsv_fields(os.path.join(config.raw_dir, name))
    out[split] = {'source': sources, 'target': targets}
  return out


SPEC = family.corpus(name='my_tsv', read=_read, folder='my_tsv', raw=_FILES, features=('source', 'target'))
'''


class OwnDatasetTest(absltest.TestCase):
  """A new dataset needs one module of its own, named by data.dataset_module (no edit of s2s_jax)."""

  def setUp(self):
    super().setUp()
    code = self.create_tempdir('code').full_path
    with open(os.path.join(code, 'my_tsv_corpus.py'), 'w', encoding='utf-8') as f:
      f.write(_OWN_MODULE)
    self.enter_context(mock.patch.object(sys, 'path', [code, *sys.path]))
    self.addCleanup(sys.modules.pop, 'my_tsv_corpus', None)  # imported afresh by each test
    self.raw = self.create_tempdir('raw').full_path
    rng = random.Random(0)
    words = 'red green blue cat dog fish one two three four'.split()
    for name, n in (('train.tsv', 400), ('valid.tsv', 40), ('test.tsv', 30)):
      rows = [rng.sample(words, rng.randint(2, 5)) for _ in range(n)]
      with open(os.path.join(self.raw, name), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{" ".join(r)}\t{" ".join(reversed(r))}\n' for r in rows))

  def config(self):
    config = default.get_config('size=tiny')
    config.data.update(
      name='my_tsv',
      dataset_module='my_tsv_corpus',
      manual_dir=self.raw,
      data_dir=self.create_tempdir('prepared').full_path,
      tokenizer='word',
      max_src_len=8,
      max_tgt_len=8,
    )
    return config

  def test_validated_and_prepared_through_its_spec(self):
    config = self.config()
    config_checks.validate(config)
    data = pipeline.prepare(config.data)
    self.assertEqual({k: len(v) for k, v in data.splits.items()}, {'train': 400, 'validation': 40, 'test': 30})
    self.assertEqual(data.report['dataset'], 'my_tsv')
    self.assertEqual(data.identity['builder'], 's2s_my_tsv')
    first = data.splits['test']
    self.assertEqual(first.targets[0], ' '.join(reversed(first.sources[0].split())))

  def test_unknown_without_its_module(self):
    config = self.config()
    config.data.dataset_module = None
    with self.assertRaisesRegex(ValueError, r"data.name='my_tsv' is not one of .*data.dataset_module"):
      config_checks.validate(config)
    config.data.dataset_module = 'json'
    with self.assertRaisesRegex(ValueError, r"data.dataset_module='json' must define SPEC"):
      config_checks.validate(config)

  @pytest.mark.slow  # trains 40 steps and tests
  def test_trains_at_size_tiny(self):
    config = self.config()
    workdir = self.create_tempdir('run').full_path
    train.train_and_evaluate(config, workdir)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
    with open(os.path.join(workdir, 'eval_test.json'), encoding='utf-8') as f:
      self.assertEqual(json.load(f)['num_sentences'], 30)
    with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
      saved = config_lib.from_saved(json.load(f))
    config_checks.validate(saved)  # what translate and evaluate do: config.json alone names the dataset's module
    self.assertEqual(saved.data.dataset_module, 'my_tsv_corpus')


if __name__ == '__main__':
  absltest.main()
