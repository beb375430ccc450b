"""What a prepared dataset is: its manifest (the raw files it was prepared from) and its identity, whose sha256 is
the data fingerprint (builders.fingerprint: the key of the vocabulary and id caches and provenance.json's
data_sha256). Both take the dataset's spec (s2s_jax/data/datasets/)."""

from typing import Any

from s2s_jax.data import builders


def data_manifest(dataset, data_config) -> dict[str, Any]:
  """The manifest of the prepared dataset of `data_config` (read from beside its files; made once at preparation)."""
  if dataset.manifest:  # prepared outside this project (data.name='tfds'): no raw files
    return dataset.manifest(dataset, data_config)
  return builders.read_manifest(dataset.make_builder(data_config))


def data_identity(dataset, data_config, split_names=None) -> dict[str, Any]:
  """What the pairs of a prepared dataset are, as a JSON-able dict: data.name, the builder, its config and version,
  each split by name with the raw files it is read from in order (path, size and sha256), every raw file, the
  source and target features and the direction (data.source_lang, data.target_lang); for data prepared outside
  this project (data.name='tfds') the spec's identity (the sha256 of its `dataset_info.json` and its record files'
  names, sizes and sampled sha256).

  Its sha256 (builders.fingerprint) keys the vocabulary and id caches and is recorded in
  provenance.json, so swapping the sides or the splits of a dataset, reversing its direction, renaming a split or
  preparing a TFDS dataset again never reuses what the other data gave, and a resume on such data refuses. Cheap at
  every start: the raw files' sha256 come from the manifest written at preparation. `split_names`: the prepared
  splits (default: the prepared dataset's)."""
  if dataset.identity:
    identity = dataset.identity(dataset, data_config, split_names)
  else:
    builder = dataset.make_builder(data_config)
    identity = builders.identity(builder, builders.read_manifest(builder), split_names)
  identity.update(
    dataset=dataset.name,
    features=list(dataset.record_features(data_config)),
    direction=[data_config.source_lang, data_config.target_lang],
  )
  return identity


def split_names(identity: dict[str, Any]) -> list[str]:
  return [split for split, _ in identity['splits']]
