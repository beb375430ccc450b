"""Any TFDS catalogue dataset already prepared as array_record in data.data_dir (data.tfds_name, e.g.
'wmt14_translate/de-en'): prepared outside this project, so it has no builder here and no raw files; its identity
is its prepared files (`_identity`)."""

import hashlib
import os

from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

_EDGE = 1 << 16  # bytes at each end of a TFDS record file that its identity hashes


def _tfds_builder(data_config):
  """The builder of a prepared TFDS dataset (data.tfds_name in data.data_dir); an error saying how to prepare it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top

  name, data_dir = data_config.tfds_name, builders.data_dir(data_config)
  if not name:
    raise ValueError("data.name='tfds' needs data.tfds_name, e.g. 'wmt14_translate/de-en'.")
  hint = (
    f'data.tfds_name={name!r} is not prepared as array_record in data.data_dir={data_dir}; prepare it there '
    f'(e.g. `tfds build {name} --data_dir={data_dir} --file_format=array_record`) or point data.data_dir at '
    'the folder that holds it.'
  )
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except ValueError as e:  # DatasetNotFoundError lists the whole catalogue: keep only its first line
    raise ValueError(f'{hint} ({str(e).splitlines()[0]})') from None
  if not prepared or builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ValueError(hint + (f' It is prepared as {builder.info.file_format.value}.' if prepared else ''))
  return builder


def _sources(dataset, data_config) -> dict:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top

  del dataset
  _tfds_builder(data_config)  # the error says how to prepare it
  return tfds.data_source(data_config.tfds_name, data_dir=builders.data_dir(data_config), download=False)


def _features(dataset, data_config) -> tuple[str, str]:
  """data.source_lang and data.target_lang, checked against the prepared dataset's features."""
  from s2s_jax.data import corpora  # pylint: disable=g-import-not-at-top

  available = tuple(sorted(_tfds_builder(data_config).info.features.keys()))
  return corpora.check_languages(dataset, data_config, available)


def _edges_sha256(path: str) -> str:
  """sha256 of a file's first and last 64 KiB: a constant-time sample of its content (a re-preparation that keeps
  every file's size almost surely changes it), where hashing whole record files (gigabytes) at every start would
  not be."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    h.update(f.read(_EDGE))
    size = os.fstat(f.fileno()).st_size
    if size > _EDGE:
      f.seek(max(_EDGE, size - _EDGE))
      h.update(f.read(_EDGE))
  return h.hexdigest()


def tfds_identity(data_config) -> dict:
  """What the records of a prepared TFDS dataset are (its part of identity.data_identity): its name, config and
  resolved version, the sha256 of its `dataset_info.json` (split sizes and shard lengths) and, per split, the names,
  sizes and sampled sha256 (`_edges_sha256`) of its record files. Preparing it again in place, or a newer version
  beside the old one, gives another identity; moving the folder does not."""
  builder = _tfds_builder(data_config)
  folder = os.fspath(builder.data_dir)
  with open(os.path.join(folder, 'dataset_info.json'), 'rb') as f:
    info_sha256 = hashlib.sha256(f.read()).hexdigest()
  splits = []
  for split, info in builder.info.splits.items():
    paths = [os.path.join(folder, name) for name in info.filenames]
    splits.append([split, [[os.path.basename(p), os.path.getsize(p), _edges_sha256(p)] for p in paths]])
  return {
    'builder': builder.name,
    'config': builder.builder_config.name if builder.builder_config else '',
    'version': str(builder.version),
    'dataset_info_sha256': info_sha256,
    'splits': sorted(splits),
    'files': [],
  }


def _identity(dataset, data_config, split_names) -> dict:
  del dataset
  identity = tfds_identity(data_config)
  if split_names is not None and sorted(split_names) != sorted(s for s, _ in identity['splits']):
    raise ValueError(f'data.tfds_name={data_config.tfds_name!r} changed while it was read; start again.')
  return identity


def _manifest(dataset, data_config) -> dict:
  """Prepared outside this project: no raw files (its identity is tfds_identity)."""
  del dataset
  return {'dataset': f'tfds:{data_config.tfds_name}', 'config': data_config.data_dir, 'version': '', 'files': []}


SPEC = spec.Dataset(
  name='tfds',
  source='text',
  builder=None,
  reader=family.corpus_reader,
  sources=_sources,
  needs=(spec.LANGS, (('tfds_name',), "data.name='tfds' needs data.tfds_name, e.g. 'wmt14_translate/de-en'.")),
  features=_features,
  identity=_identity,
  manifest=_manifest,
  split_hint=' data.tfds_name={data.tfds_name!r} has no such split; pick one of those found.',
)
