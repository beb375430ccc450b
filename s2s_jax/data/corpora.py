"""Text corpora as TFDS builders (array_record, no TensorFlow): one builder class per dataset spec (its `read`
gives the records), configured by the spec and the data config; and the readers of prepared corpora.

Raw files are read from `data.manual_dir` (default `$S2S_DATA_DIR/<folder>`, CONVENTIONS §4), or named by
data.files for a spec without a folder (parallel_text), and prepared once into `data.data_dir` under a file lock.
Records keep raw text (only trailing newlines and `\\r` are stripped; empty lines are kept) in file order, one Text
feature per language code (so one prepared dataset serves both directions), or the spec's fixed features.

The file lists and sizes and mtimes of the raw files are stored with the prepared data; when they change, the data
is prepared again, so stale records are never read. With `data.download=True`, missing raw files are fetched from the
official URLs into `data.data_dir/downloads/<name>`; nothing touches the network otherwise.
"""

import dataclasses
import functools
import hashlib
import shutil
from typing import Any

from absl import logging
import tensorflow_datasets as tfds

from s2s_jax.data import builders
from s2s_jax.data import raw_files


@dataclasses.dataclass
class CorpusConfig(tfds.core.BuilderConfig):
  """Where a corpus' raw files are; `raw_files.fingerprint` (sizes and mtimes) is stored to detect changed raw files."""

  languages: tuple[str, ...] = ()
  raw_dir: str = ''
  files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a spec without a folder: ((split, (path, ...)), ...)
  fingerprint: str = ''
  raw_paths: tuple[str, ...] = ()  # hashed into the dataset's manifest when it is prepared
  dataset: Any = dataclasses.field(default=None, repr=False)  # its spec, whose `read(config)` gives the records


class Corpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared parts: one Text feature per language, records in file order, raw files read by the spec's `read`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = []  # one config per language pair / file set, made on demand by get_builder()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=f'{self.builder_config.dataset.name}: a text corpus (its spec is in s2s_jax/data/datasets/).',
      features=tfds.features.FeaturesDict({lang: tfds.features.Text() for lang in self.builder_config.languages}),
      disable_shuffling=True,  # file order kept: split i-th record = i-th raw line (references line up)
      metadata=tfds.core.MetadataDict(raw_files=self.builder_config.fingerprint),
    )

  def split_files(self) -> dict[str, list[str]]:
    """split -> the raw files it is read from (data.files, else the spec's raw files)."""
    c = self.builder_config
    if c.files:
      return {split: list(paths) for split, paths in c.files}
    return c.dataset.expected_files(c.languages)

  def _read(self) -> dict[str, dict[str, list[str]]]:
    """split -> language -> lines (aligned)."""
    return self.builder_config.dataset.read(self.builder_config)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = self._read()  # everything is read and checked before anything is written
    for split, columns in splits.items():
      if not len(next(iter(columns.values()))):
        raise ValueError(f'{self.name}: split {split!r} has no lines ({self.builder_config.raw_dir or "files"}).')
    return {split: self._generate_examples(columns) for split, columns in splits.items()}

  def _generate_examples(self, columns: dict[str, list[str]]):
    for i, row in enumerate(zip(*columns.values())):
      yield i, dict(zip(columns, row))


@functools.cache
def builder_class(base: type, name: str) -> type:
  """The TFDS builder class `name` (a spec's builder_name: the prepared data's folder in data.data_dir) of a
  family's `base` class: one per dataset, made once, as TFDS registers builders by class."""
  return type(''.join(p.capitalize() for p in name.split('_')), (base,), {'name': name, '__module__': base.__module__})


def check_languages(dataset, data_config, available) -> tuple[str, str]:
  """(data.source_lang, data.target_lang), checked to be two different codes of `available`."""
  src, tgt = data_config.source_lang, data_config.target_lang
  if src not in available or tgt not in available or src == tgt:
    raise ValueError(
      f'data.name={dataset.name!r}: data.source_lang and data.target_lang must be two different '
      f'codes of {", ".join(available)}; got {src!r} and {tgt!r}.'
    )
  return src, tgt


def get_builder(dataset, data_config) -> Corpus:
  """The builder of a text corpus for these settings; checks (or downloads) the raw files, prepares nothing."""
  data_dir = builders.data_dir(data_config)
  if not dataset.folder:  # files named by data.files
    files = raw_files.resolve_files(data_config.files)
    paths = [p for split_paths in files.values() for p in split_paths]
    fp = raw_files.fingerprint(paths)  # absolute paths, sizes and mtimes: changed files get a new config name
    key = '|'.join(f'{s}={",".join(p)}' for s, p in files.items()) + fp
    config = CorpusConfig(
      name='files-' + hashlib.sha256(key.encode()).hexdigest()[:12],
      languages=tuple(dataset.record_features(data_config)),
      files=tuple(files.items()),
      fingerprint=fp,
      raw_paths=tuple(paths),
      dataset=dataset,
    )
  else:
    if dataset.languages:
      languages = tuple(sorted(check_languages(dataset, data_config, dataset.languages)))
    else:  # fixed features
      languages = tuple(sorted((*dataset.record_features(data_config), *filter(None, [dataset.references]))))
    raw, paths = raw_files.raw_dir(dataset, data_config, data_dir, languages)
    config = CorpusConfig(
      name='-'.join(languages),
      languages=languages,
      raw_dir=raw,
      fingerprint=raw_files.fingerprint(paths, raw),
      raw_paths=tuple(paths),
      dataset=dataset,
    )
  return builder_class(Corpus, dataset.builder_name)(config=config, data_dir=data_dir, file_format='array_record')


def prepare(dataset, data_config, with_metadata: bool = False):
  """Prepares a dataset once (locked; again when its raw files changed); returns split -> data source (and, with
  `with_metadata`, the prepared dataset's metadata). The spec's builder makes the builder (corpora, speech and
  image datasets alike)."""
  builder = dataset.make_builder(data_config)
  config = builder.builder_config
  with builders.lock(builder.data_dir_root, f'{builder.name}-{config.name}'):
    # A builder reads its dataset_info when constructed: one made while another process was preparing would see
    # no splits, so it is made again under the lock.
    builder = dataset.make_builder(data_config)
    stored = tfds.core.MetadataDict()
    if builder.is_prepared():
      try:
        stored.load_metadata(builder.data_dir)
      except (OSError, ValueError):
        pass
      if stored.get('raw_files') != config.fingerprint:
        logging.warning('Raw files of %s changed since it was prepared; preparing again.', builder.data_dir)
        shutil.rmtree(builder.data_dir)
        builder = type(builder)(config=config, data_dir=builder.data_dir_root, file_format='array_record')
    if not builder.is_prepared():
      builders.download_and_prepare(builder)
      stored = builder.info.metadata
  sources = builder.as_data_source()
  return (sources, stored) if with_metadata else sources


def load_pairs(dataset, data_config, pool=None) -> dict[str, list[tuple[str, str]]]:
  """split -> (source, target) strings of a corpus, source = data.source_lang (or the spec's source feature);
  a large split is parsed in the workers of `pool` (a workers.Pool)."""
  src, tgt = dataset.record_features(data_config)
  sources = dataset.sources(dataset, data_config)
  return {split: builders.read_texts(source, (src, tgt), pool) for split, source in sources.items()}


def load(dataset, data_config, pool=None) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
  """load_pairs with a train split required (the reader of the text corpora); nothing is skipped."""
  pairs = load_pairs(dataset, data_config, pool)
  require_split(dataset, pairs, 'train', data_config)
  return pairs, []


def load_references(dataset, data_config, pool=None) -> dict[str, list[list[str]]]:
  """split -> reference streams [K][N] for the splits of a corpus with several references per example (its spec's
  `references` feature: AESLC's annotated subject lines); {} for every other corpus (their target is the one
  reference). Examples with fewer than K references repeat their first one, so every stream is complete."""
  if not dataset.references:
    return {}
  out = {}
  for split, source in dataset.sources(dataset, data_config).items():
    rows = [r[0].split('\n') for r in builders.read_texts(source, (dataset.references,), pool)]
    rows = [[x for x in row if x] for row in rows]
    if not any(rows):
      continue
    if not all(rows):
      raise ValueError(f'data.name={dataset.name!r}: split {split!r} has examples without references.')
    k = max(map(len, rows))
    out[split] = [[row[j] if j < len(row) else row[0] for row in rows] for j in range(k)]
  return out


def require_split(dataset, pairs: dict[str, Any], split: str, data_config) -> Any:
  """pairs[split], or a ValueError naming what would provide it (e.g. the IWSLT'15 train files and their folder)."""
  if split in pairs:
    return pairs[split]
  msg = f'data.name={dataset.name!r} has no {split!r} split; found {sorted(pairs)}.'
  if dataset.folder:
    languages = sorted((data_config.source_lang, data_config.target_lang))
    files = dataset.expected_files(languages).get(split, [])
    msg += (
      f' It is read from {files} in {dataset.manual_dir(data_config)} (data.manual_dir, default '
      f'$S2S_DATA_DIR/{dataset.folder}); put them there, or set data.download=True to fetch them from '
      f'{dataset.url} into data.data_dir/downloads/{dataset.name}.'
    )
  raise ValueError(msg + dataset.split_hint.format(split=split, data=data_config))
