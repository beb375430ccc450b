"""Datasets by name: what `data.name` reads, through which builder, and what kind of source it has.

  entry = registry.get('multi30k')        # Dataset('multi30k', family='corpus', ...); entry.source == 'text'
  raw, skipped = entry.load(data_config)  # split -> [(source, target)], unreadable raw files skipped
  builder = entry.builder(data_config)    # its TFDS builder (None for data.name='tfds': prepared elsewhere)

A source is `text` (token ids: model.input_kind 'tokens'), `audio` (log-mel frames: 'frames') or `image` (columns of
pixels: 'image'); the source side's frontend is accordingly a text vocabulary, an `audio.AudioFrontend` or an
`images.ImageFrontend` (all loaded by `frontend.load`). This module imports nothing heavy (config validation reads it
before any data is touched): loaders and builders are named 'module:function' and imported when called.
"""

import dataclasses
import importlib
from typing import Any

SOURCE_KINDS = ('text', 'audio', 'image')
INPUT_KINDS = {'text': 'tokens', 'audio': 'frames', 'image': 'image'}  # source kind -> model.input_kind


def _call(target: str, *args):
  module, function = target.split(':')
  return getattr(importlib.import_module(module), function)(*args)


# family -> (source kind, loader, builder). A loader maps data_config to (split -> [(source, target)], the raw files
# it skipped as unreadable); a builder maps it to the dataset's TFDS builder (preparing nothing).
FAMILIES = {
  'generated': ('text', 's2s_jax.data.builders:load_generated', 's2s_jax.data.builders:generated_builder'),
  'corpus': ('text', 's2s_jax.data.corpora:load', 's2s_jax.data.corpora:get_builder'),
  'speech': ('audio', 's2s_jax.data.speech:load_clips', 's2s_jax.data.speech:get_builder'),
  'images': ('image', 's2s_jax.data.image_datasets:load_pictures', 's2s_jax.data.image_datasets:get_builder'),
}


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One value of data.name."""

  name: str
  family: str  # a key of FAMILIES
  needs: tuple[tuple[tuple[str, ...], str], ...] = ()  # (data fields that must be set, the error when one is not)
  folder: str = ''  # raw files: data.manual_dir, else this folder of the shared data root (raw_files.default_data_root)

  @property
  def source(self) -> str:
    """One of SOURCE_KINDS."""
    return FAMILIES[self.family][0]

  @property
  def input_kind(self) -> str:
    return INPUT_KINDS[self.source]

  def load(self, data_config) -> tuple[dict[str, list[tuple[Any, str]]], list[str]]:
    return _call(FAMILIES[self.family][1], data_config)

  def builder(self, data_config):
    """The TFDS builder (data.name='tfds' has none here: it is prepared outside this project)."""
    return None if self.name == 'tfds' else _call(FAMILIES[self.family][2], data_config)

  def check(self, data_config) -> None:
    """Raises ValueError when a field this dataset needs is not set."""
    for fields, message in self.needs:
      if any(not data_config[field] for field in fields):
        raise ValueError(message.format(name=self.name))


_LANGS = (
  ('source_lang', 'target_lang'),
  'data.name={name!r} needs data.source_lang and data.target_lang (e.g. de and en).',
)


def _files(example: str) -> tuple[tuple[str, ...], str]:
  return ('files',), f'data.name={{name!r}} needs data.files, e.g. {example}.'


DATASETS = {
  d.name: d
  for d in (
    *(Dataset(task, 'generated') for task in ('dates', 'copy', 'reverse', 'sort', 'addition')),
    Dataset('multi30k', 'corpus', needs=(_LANGS,), folder='multi30k'),
    Dataset('tatoeba', 'corpus', needs=(_LANGS,), folder='tatoeba_fra_eng'),
    Dataset('iwslt15', 'corpus', needs=(_LANGS,), folder='iwslt15_en_vi'),
    Dataset('aeslc', 'corpus', folder='aeslc'),
    Dataset('parallel_text', 'corpus', needs=(_files("'train=a.de,a.en;validation=b.tsv'"),)),
    Dataset(
      'tfds',
      'corpus',
      needs=(_LANGS, (('tfds_name',), "data.name='tfds' needs data.tfds_name, e.g. 'wmt14_translate/de-en'.")),
    ),
    Dataset('fsdd', 'speech', folder='fsdd'),
    Dataset('yesno', 'speech', folder='yesno'),
    Dataset(
      'audio_folder', 'speech', needs=(_files("'train=train.tsv;test=test.tsv' (lines AUDIO_PATH<TAB>transcript)"),)
    ),
    Dataset('digits_captions', 'images'),
    Dataset(
      'image_folder', 'images', needs=(_files("'train=captions.tsv;test=test.tsv' (lines IMAGE_PATH<TAB>caption)"),)
    ),
  )
}
NAMES = tuple(DATASETS)
FOLDERS = {name: d.folder for name, d in DATASETS.items() if d.folder}


def get(name: str) -> Dataset:
  if name not in DATASETS:
    raise ValueError(f'data.name={name!r} is not one of {NAMES}.')
  return DATASETS[name]


def folders(family_name: str) -> dict[str, str]:
  """data.name -> raw folder of a family's datasets that have one."""
  return {name: folder for name, folder in FOLDERS.items() if DATASETS[name].family == family_name}


def family(name: str) -> tuple[str, ...]:
  """The datasets of a family (a key of FAMILIES), e.g. the text corpora."""
  return tuple(n for n, d in DATASETS.items() if d.family == name)
