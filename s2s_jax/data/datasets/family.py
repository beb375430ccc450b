"""The hooks the specs of a family share: they call the family's builder module (corpora.py, speech.py,
image_datasets.py), imported when called so that the specs stay light; and the reader of aligned text files."""

import os

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import spec


def corpus_builder(dataset, data_config):
  from s2s_jax.data import corpora  # pylint: disable=g-import-not-at-top

  return corpora.get_builder(dataset, data_config)


def corpus_sources(dataset, data_config) -> dict:
  from s2s_jax.data import corpora  # pylint: disable=g-import-not-at-top

  return corpora.prepare(dataset, data_config)


def corpus_reader(dataset, data_config, pool=None):
  from s2s_jax.data import corpora  # pylint: disable=g-import-not-at-top

  return corpora.load(dataset, data_config, pool)


def speech_reader(dataset, data_config, pool=None):
  from s2s_jax.data import speech  # pylint: disable=g-import-not-at-top

  del pool  # clips are decoded here
  return speech.load_clips(dataset, data_config)


def image_reader(dataset, data_config, pool=None):
  from s2s_jax.data import image_datasets  # pylint: disable=g-import-not-at-top

  del pool  # pictures are decoded here
  return image_datasets.load_pictures(dataset, data_config)


def corpus(**fields) -> spec.Dataset:
  """The spec of a text corpus prepared by corpora.py (`fields`: the rest of spec.Dataset, `read` included)."""
  return spec.Dataset(source='text', builder=corpus_builder, reader=corpus_reader, sources=corpus_sources, **fields)


def read_aligned(config) -> dict[str, dict[str, list[str]]]:
  """split -> language -> lines of a corpus with one file per split and language (its spec's `raw` patterns); a
  split of `optional_splits` is left out unless all its files exist."""
  dataset = config.dataset
  out = {}
  for split, files in dataset.expected_files(config.languages).items():
    paths = {lang: os.path.join(config.raw_dir, f) for lang, f in zip(config.languages, files)}
    if split not in dataset.optional_splits or all(os.path.isfile(p) for p in paths.values()):
      out[split] = raw_files.aligned_lines(paths)
  return out
