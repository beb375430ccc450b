"""Datasets of images with captions: generated digit canvases and a folder of images (the frontend is in images.py).

  digits_captions  canvases of data.image_height x data.image_width pixels holding 1 to data.task_max_len
                   handwritten digits from scikit-learn's digit images (8x8, 1,797 of them; no download), each
                   scaled to 10-16 pixels, jittered vertically and placed left to right with random gaps; the caption
                   is the digit words ('three one four'). Each split draws from its own digit images, so test and
                   validation canvases show handwriting never seen in training: image index % 10 in {0, 1} -> test,
                   2 -> validation, else train. data.num_train_examples / num_eval_examples canvases.
  image_folder     data.files = 'train=captions.tsv;test=test.tsv': lines `IMAGE_PATH<TAB>caption` (paths relative to
                   the TSV; a Flickr8k-style `name.jpg#2` suffix is dropped), resized to the configured size.
Unreadable images are counted, skipped and listed in data_report.json (`skipped_images`).
"""

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from s2s_jax.data import DIGIT_WORDS
from s2s_jax.data import builders
from s2s_jax.data import corpora
from s2s_jax.data import raw_files
from s2s_jax.data import images

DIGIT_SIZES = (10, 16)  # smallest and largest digit height on a canvas (pixels)
MAX_GAP = 3  # pixels between digits: 0..MAX_GAP


def digits_split(index: int) -> str:
  """The split whose canvases may use scikit-learn digit image `index`."""
  return 'test' if index % 10 < 2 else 'validation' if index % 10 == 2 else 'train'


def min_width(max_digits: int) -> int:
  return max_digits * (DIGIT_SIZES[1] + MAX_GAP) + MAX_GAP


def digit_canvases(
  images: np.ndarray, labels: np.ndarray, num: int, rng: np.random.Generator, height: int, width: int, max_digits: int
):
  """Yields `num` (uint8 canvas [height, width], caption) of 1..max_digits of the given 8x8 digit images."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  if height < DIGIT_SIZES[1] or width < min_width(max_digits):
    raise ValueError(
      f'digits_captions needs data.image_height >= {DIGIT_SIZES[1]} and data.image_width >= '
      f'{min_width(max_digits)} for {max_digits} digits; got {height} x {width}.'
    )
  for _ in range(num):
    canvas = np.zeros((height, width), np.uint8)
    x, words = int(rng.integers(0, MAX_GAP + 1)), []
    for _ in range(int(rng.integers(1, max_digits + 1))):
      i = int(rng.integers(0, len(images)))
      size = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
      digit = Image.fromarray((images[i] * (255.0 / 16.0)).astype(np.uint8)).resize((size, size), Image.BILINEAR)
      y = int(rng.integers(0, height - size + 1))
      canvas[y : y + size, x : x + size] = np.maximum(canvas[y : y + size, x : x + size], np.asarray(digit))
      x += size + int(rng.integers(0, MAX_GAP + 1))
      words.append(DIGIT_WORDS[int(labels[i])])
    yield canvas, ' '.join(words)


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


class _Images(tfds.core.GeneratorBasedBuilder):
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

  def _generate_examples(self, rows):
    for i, (name, pixels, caption) in enumerate(rows):
      yield i, {'image': pixels, 'caption': caption, 'name': name}


class S2sDigitsCaptions(_Images):
  """Canvases of handwritten digits captioned with the digit words (see the module docstring)."""

  def _split_generators(self, dl_manager):
    del dl_manager
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

    c = self.builder_config
    digits = load_digits()
    out = {}
    for k, (split, num) in enumerate((('train', c.num_train), ('validation', c.num_eval), ('test', c.num_eval))):
      keep = np.array([digits_split(i) == split for i in range(len(digits.images))])
      rng = np.random.default_rng([c.seed, k])
      canvases = digit_canvases(digits.images[keep], digits.target[keep], num, rng, c.height, c.width, c.max_digits)
      out[split] = self._generate_examples(
        (f'digits/{split}/{i}', x[..., None], caption) for i, (x, caption) in enumerate(canvases)
      )
    return out


class S2sImageFolder(_Images):
  """Image files listed with captions in one TSV per split (see the module docstring)."""

  def split_files(self) -> dict[str, list[str]]:
    """split -> its TSV (the image files it lists are in the manifest, hashed with the rest)."""
    return {split: list(paths) for split, paths in self.builder_config.files}

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    out, skipped = {}, []
    for split, (tsv,) in c.files:
      rows = []
      for n, line in enumerate(raw_files.read_lines(tsv), 1):
        fields = line.split('\t')
        if len(fields) != 2 or not fields[0].strip():
          raise ValueError(f'{tsv}:{n}: expected IMAGE_PATH<TAB>caption, found {line[:80]!r}.')
        path = _image_path(tsv, fields[0])
        try:
          rows.append((path, images.read_image(path, c.height, c.width, c.channels), fields[1]))
        except ValueError as e:
          if split != 'train':  # evaluation examples are never dropped: a missing one would change the score
            raise ValueError(
              f'{tsv}:{n}: {e} Examples of the {split!r} split are never dropped; fix the image or remove its line.'
            ) from e
          skipped.append(str(e))
      out[split] = self._generate_examples(rows)
    self.info.metadata['skipped_images'] = skipped
    return out


def _image_path(tsv: str, field: str) -> str:
  name = field.strip()
  name = name.rsplit('#', 1)[0] if '#' in name and name.rsplit('#', 1)[1].isdigit() else name
  return os.path.join(os.path.dirname(tsv), name)


def get_builder(data_config) -> _Images:
  """The builder of an image dataset for these settings (prepares nothing)."""
  d = data_config
  data_dir = os.path.abspath(os.path.expanduser(d.data_dir or builders.default_data_dir()))
  size = dict(height=d.image_height, width=d.image_width, channels=d.image_channels)
  if d.name == 'digits_captions':
    name = (
      f'h{d.image_height}w{d.image_width}_n{d.num_train_examples}-{d.num_eval_examples}_d{d.task_max_len}_s{d.seed}'
    )
    config = ImageConfig(
      name=name,
      num_train=d.num_train_examples,
      num_eval=d.num_eval_examples,
      max_digits=d.task_max_len,
      seed=d.seed,
      **size,
    )
    return S2sDigitsCaptions(config=config, data_dir=data_dir, file_format='array_record')
  files = raw_files.resolve_files(d.files)
  if bad := [f'{s}={",".join(p)}' for s, p in files.items() if len(p) != 1]:
    raise ValueError(f"data.name='image_folder' takes one TSV per split (SPLIT=captions.tsv), got {bad}.")
  image_files = sorted(
    {
      p
      for ps in files.values()
      for line in raw_files.read_lines(ps[0])
      if os.path.isfile(p := _image_path(ps[0], line.split('\t')[0]))
    }
  )
  raw_paths = [p for ps in files.values() for p in ps] + image_files
  fp = raw_files.fingerprint(raw_paths)
  key = '|'.join(f'{s}={p[0]}' for s, p in files.items()) + json.dumps(size) + fp
  config = ImageConfig(
    name='files-' + hashlib.sha256(key.encode()).hexdigest()[:12],
    files=tuple(files.items()),
    fingerprint=fp,
    raw_paths=tuple(raw_paths),
    **size,
  )
  return S2sImageFolder(config=config, data_dir=data_dir, file_format='array_record')


def load_pictures(data_config) -> tuple[dict[str, list[tuple[images.Picture, str]]], list[str]]:
  """split -> (picture, caption) of an image dataset (prepared once), and the skipped unreadable files."""
  sources, metadata = corpora.prepare(data_config, get_builder, with_metadata=True)
  out = {}
  for split, source in sources.items():
    records = source.__getitems__(list(range(len(source))))
    out[split] = [
      (images.Picture(r['name'].decode('utf-8'), r['image']), r['caption'].decode('utf-8')) for r in records
    ]
  return out, list(metadata.get('skipped_images', []))
