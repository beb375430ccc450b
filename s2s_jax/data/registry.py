"""The registry: the list of dataset specs (s2s_jax/data/datasets/, one module per dataset or family).

  dataset = registry.get('multi30k')       # its spec: datasets.spec.Dataset; dataset.source == 'text'
  raw, skipped = dataset.load(data_config)  # split -> [(source, target)], unreadable raw files skipped
  builder = dataset.make_builder(data_config)  # its TFDS builder (None for data prepared elsewhere: tfds)

The spec, once looked up from data.name, is what the data wing passes down. A dataset defined outside this package
is named by data.dataset_module, a module whose `SPEC` is its spec (docs/adding_a_dataset.md): every entry point
(main, translate, evaluate) then finds it from config.json alone. Importing this module imports no heavy library
(config validation reads it before any data is touched).
A source is `text`, `audio` or `image`; its frontend (a text vocabulary, an `audio.AudioFrontend` or an
`images.ImageFrontend`) is loaded by `frontend.load`.
"""

import importlib

from s2s_jax.data.datasets import aeslc
from s2s_jax.data.datasets import audio_folder
from s2s_jax.data.datasets import digits_captions
from s2s_jax.data.datasets import fsdd
from s2s_jax.data.datasets import generated
from s2s_jax.data.datasets import image_folder
from s2s_jax.data.datasets import iwslt15
from s2s_jax.data.datasets import multi30k
from s2s_jax.data.datasets import parallel_text
from s2s_jax.data.datasets import spec
from s2s_jax.data.datasets import tatoeba
from s2s_jax.data.datasets import tfds_catalog
from s2s_jax.data.datasets import yesno

SOURCE_KINDS = spec.SOURCE_KINDS
INPUT_KINDS = spec.INPUT_KINDS
Dataset = spec.Dataset

SPECS = (
  *generated.SPECS,
  multi30k.SPEC,
  tatoeba.SPEC,
  iwslt15.SPEC,
  aeslc.SPEC,
  parallel_text.SPEC,
  tfds_catalog.SPEC,
  fsdd.SPEC,
  yesno.SPEC,
  audio_folder.SPEC,
  digits_captions.SPEC,
  image_folder.SPEC,
)
DATASETS = {d.name: d for d in SPECS}
NAMES = tuple(DATASETS)


def get(name: str, module: str | None = None) -> Dataset:
  """The spec of data.name: one of the project's datasets, else the `SPEC` of `module` (data.dataset_module)."""
  if name in DATASETS:
    return DATASETS[name]
  if not module:
    raise ValueError(
      f'data.name={name!r} is not one of {NAMES}; a dataset of your own also needs data.dataset_module '
      '(the module defining its SPEC).'
    )
  try:
    found = getattr(importlib.import_module(module), 'SPEC', None)
  except ImportError as e:
    raise ValueError(f'data.dataset_module={module!r} cannot be imported ({e}); is its folder on PYTHONPATH?') from e
  if not isinstance(found, Dataset) or found.name != name:
    raise ValueError(
      f'data.dataset_module={module!r} must define SPEC, a s2s_jax.data.datasets.spec.Dataset named {name!r} '
      f'(data.name); found {found!r:.100}.'
    )
  return found


def of(data_config) -> Dataset:
  """The spec of a config's data section (data.name, data.dataset_module)."""
  return get(data_config.name, data_config.get('dataset_module'))
