"""What a dataset is: one `Dataset` spec per value of data.name, declared in its own module of this package.

  SPEC = spec.Dataset(name='multi30k', source='text', builder=..., reader=..., folder='multi30k', ...)

A spec holds every fact that belongs to one dataset (its name, source kind, raw folder, languages, raw files by
split, official downloads with their sha256, the config fields it needs) and the functions that make its TFDS
builder and read its examples. The rest of the data wing receives the spec and never tests a dataset's name.
Spec modules stay light: they import heavy libraries (tensorflow-datasets, soundfile, scikit-learn) inside their
functions, so validating a config (which reads every spec) imports none of them. docs/adding_a_dataset.md walks
through adding one.
"""

from collections.abc import Callable
from collections.abc import Mapping
import dataclasses
import os
from typing import Any

from s2s_jax.data import raw_files

SOURCE_KINDS = ('text', 'audio', 'image')
INPUT_KINDS = {'text': 'tokens', 'audio': 'frames', 'image': 'image'}  # source kind -> model.input_kind

# (data fields that must be set, the error when one is not); {name} is data.name.
Needs = tuple[tuple[str, ...], str]
LANGS: Needs = (
  ('source_lang', 'target_lang'),
  'data.name={name!r} needs data.source_lang and data.target_lang (e.g. de and en).',
)


def files_needed(example: str) -> Needs:
  return ('files',), f'data.name={{name!r}} needs data.files, e.g. {example}.'


@dataclasses.dataclass(frozen=True)
class Download:
  """Where one raw file comes from (data.download=True only) and the sha256 it must have ('' when none is
  published: it is logged instead). `unpack` turns the downloaded bytes into the stored file (e.g. one member of a
  zip archive, gzipped)."""

  url: str
  sha256: str = ''
  unpack: Callable[[bytes], bytes] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """One value of data.name.

  The hooks take the spec itself first, so one function serves a family of datasets:
    builder(spec, data_config) -> its TFDS builder, checking (or downloading) its raw files and preparing nothing;
      None for a dataset prepared outside this project (data.name='tfds').
    reader(spec, data_config, pool) -> (split -> [(source, target)] with a train split, the raw files skipped as
      unreadable); `pool` is a workers.Pool (or None) for the CPU-heavy parsing of a large text split.
    sources(spec, data_config) -> split -> the prepared split as a random-access data source (text datasets).
    read(builder) -> what its builder prepares, in the form of the family's builder (corpora.Corpus: split ->
      feature -> lines; speech.Speech and image_datasets.Images: split -> examples).
  """

  name: str
  source: str  # one of SOURCE_KINDS
  builder: Callable[..., Any] | None
  reader: Callable[..., tuple[dict[str, list[tuple[Any, str]]], list[str]]]
  sources: Callable[..., dict[str, Any]] | None = None
  read: Callable[..., Any] | None = None
  needs: tuple[Needs, ...] = ()
  folder: str = ''  # raw files: data.manual_dir, else this folder of the shared data root ('': none)
  languages: tuple[str, ...] = ()  # what data.source_lang and data.target_lang may be (() : not asked)
  raw: Mapping[str, str] = dataclasses.field(default_factory=dict)  # split -> raw file(s) in the folder ({lang})
  optional_splits: tuple[str, ...] = ()  # splits whose raw files may be absent (the split is then left out)
  url: str = ''  # where the raw files come from (named in errors)
  downloads: Mapping[str, Download] = dataclasses.field(default_factory=dict)  # raw file -> its official download
  no_download: str = ''  # what to do instead, for a dataset with raw files but no download
  features: tuple[str, str] | Callable[..., tuple[str, str]] = ()  # record features of (source, target);
  # (): data.source_lang and data.target_lang; a function (spec, data_config) -> them
  references: str = ''  # the record feature holding several references per example, joined by newlines
  split_files: Callable[..., dict[str, list[str]]] | None = None  # (builder config) -> split -> raw files read
  identity: Callable[..., dict] | None = None  # (spec, data_config, split names): data prepared outside (tfds)
  manifest: Callable[..., dict] | None = None  # (spec, data_config): data prepared outside (tfds)
  split_hint: str = ''  # appended to the error for a missing split ({split}, {data}: data.split, data_config)
  tfds_name: str = ''  # the TFDS builder's name (default s2s_<name>): its folder in data.data_dir

  @property
  def input_kind(self) -> str:
    return INPUT_KINDS[self.source]

  @property
  def builder_name(self) -> str:
    return self.tfds_name or f's2s_{self.name}'

  def check(self, data_config) -> None:
    """Raises ValueError when a field this dataset needs is not set."""
    for fields, message in self.needs:
      if any(not data_config[field] for field in fields):
        raise ValueError(message.format(name=self.name))

  def load(self, data_config, pool=None) -> tuple[dict[str, list[tuple[Any, str]]], list[str]]:
    """split -> (source, target) pairs (a train split required) and the raw files skipped as unreadable."""
    return self.reader(self, data_config, pool)

  def make_builder(self, data_config):
    """Its TFDS builder (None for data prepared outside this project)."""
    return self.builder(self, data_config) if self.builder else None

  def record_features(self, data_config) -> tuple[str, str]:
    """The record features sources and targets are read from (their order is the direction of the pairs)."""
    if callable(self.features):
      return self.features(self, data_config)
    return self.features or (data_config.source_lang, data_config.target_lang)

  def manual_dir(self, data_config) -> str | None:
    """The absolute raw folder of a dataset with one: data.manual_dir or default_data_root()/<folder>; else None."""
    if not self.folder:
      return None
    if data_config.manual_dir:
      return os.path.abspath(os.path.expanduser(data_config.manual_dir))
    return os.path.join(raw_files.default_data_root(), self.folder)

  def expected_files(self, languages) -> dict[str, list[str]]:
    """split -> raw files (relative to the raw folder), for these record languages."""
    return {split: list(dict.fromkeys(p.format(lang=lang) for lang in languages)) for split, p in self.raw.items()}
