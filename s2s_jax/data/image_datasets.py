"""Datasets of images with captions as TFDS builders (array_record, no TensorFlow): one builder class per dataset spec
(generated digit canvases, a folder of images: s2s_jax/data/datasets/), whose `read` gives the split generators.
Records are {'image': uint8 [H, W, C], 'caption', 'name'} (the frontend is in images.py). Unreadable images are
counted, skipped and listed in data_report.json (`skipped_images`).
"""

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from s2s_jax.data import corpora
from s2s_jax.data import images


@dataclasses.dataclass
class ImageConfig(tfds.core.BuilderConfig):
  height: int = 24
  width: int = 100
  channels: int = 1
  files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # image_folder: ((split, (tsv,)), ...)
  num_train: int = 0
  num_eval: int = 0
  max_digits: int = 5
  seed: int = 0
  fingerprint: str = ''
  raw_paths: tuple[str, ...] = ()  # hashed into the dataset's manifest when it is prepared
  dataset: Any = dataclasses.field(default=None, repr=False)  # its spec, whose `read(builder)` gives the splits


class Images(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = []

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(self.__doc__ or '').strip(),
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding='zlib'),
          'caption': tfds.features.Text(),
          'name': tfds.features.Text(),
        }
      ),
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(raw_files=self.builder_config.fingerprint),
    )

  def split_files(self) -> dict[str, list[str]]:
    """split -> its TSV of data.files (the image files it lists are in the manifest, hashed with the rest)."""
    return {split: list(paths) for split, paths in self.builder_config.files}

  def _split_generators(self, dl_manager):
    del dl_manager
    return self.builder_config.dataset.read(self)

  def examples(self, rows):
    """A split generator of rows (name, uint8 pixels [H, W, C], caption)."""
    return self._generate_examples(rows)

  def _generate_examples(self, rows):
    for i, (name, pixels, caption) in enumerate(rows):
      yield i, {'image': pixels, 'caption': caption, 'name': name}


def make_builder(config: ImageConfig, data_dir: str) -> Images:
  """The builder of `config.dataset` (its spec) with this config, in data_dir."""
  return corpora.builder_class(Images, config.dataset.builder_name)(
    config=config, data_dir=data_dir, file_format='array_record'
  )


def load_pictures(dataset, data_config) -> tuple[dict[str, list[tuple[images.Picture, str]]], list[str]]:
  """split -> (picture, caption) of an image dataset (prepared once), and the skipped unreadable files."""
  sources, metadata = corpora.prepare(dataset, data_config, with_metadata=True)
  out = {}
  for split, source in sources.items():
    records = source.__getitems__(list(range(len(source))))
    out[split] = [
      (images.Picture(r['name'].decode('utf-8'), r['image']), r['caption'].decode('utf-8')) for r in records
    ]
  return out, list(metadata.get('skipped_images', []))
