"""The dataset registry: every data.name, its family, source kind and loaders; config validation through it."""

import importlib
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax.data import registry
from s2s_jax.data import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RegistryTest(parameterized.TestCase):
  def test_generated_tasks_are_the_synthetic_ones(self):
    self.assertEqual(registry.family('generated'), synthetic.TASKS)

  @parameterized.parameters(*registry.FAMILIES)
  def test_loaders_and_builders_resolve(self, family):
    source, loader, builder = registry.FAMILIES[family]
    self.assertIn(source, registry.SOURCE_KINDS)
    for target in (loader, builder):
      module, function = target.split(':')
      self.assertTrue(callable(getattr(importlib.import_module(module), function)), target)

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
    dataset builder."""
    script = (
      'import sys; import s2s_jax.config_lib, s2s_jax.config_checks; '
      'prefixes = ("tensorflow_datasets", "grain", "s2s_jax.data."); '
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
    self.assertNotIn('tensorflow_datasets', out)
    self.assertNotIn('s2s_jax.data.corpora', out)
    self.assertIn('s2s_jax.data.registry', out)


if __name__ == '__main__':
  absltest.main()
