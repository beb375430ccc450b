"""Canvases of handwritten digits captioned with the digit words, generated from scikit-learn's digit images (8x8,
1,797 of them; no download).

Each canvas of data.image_height x data.image_width pixels holds 1 to data.task_max_len digits, each scaled to 10-16
pixels, jittered vertically and placed left to right with random gaps; the caption is the digit words ('three one
four'). Each split draws from its own digit images, so test and validation canvases show handwriting never seen in
training: image index % 10 in {0, 1} -> test, 2 -> validation, else train. data.num_train_examples /
num_eval_examples canvases.
"""

import numpy as np

from s2s_jax.data import DIGIT_WORDS
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

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


def _read(builder) -> dict:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  c = builder.builder_config
  digits = load_digits()
  out = {}
  for k, (split, num) in enumerate((('train', c.num_train), ('validation', c.num_eval), ('test', c.num_eval))):
    keep = np.array([digits_split(i) == split for i in range(len(digits.images))])
    rng = np.random.default_rng([c.seed, k])
    canvases = digit_canvases(digits.images[keep], digits.target[keep], num, rng, c.height, c.width, c.max_digits)
    out[split] = builder.examples(
      (f'digits/{split}/{i}', x[..., None], caption) for i, (x, caption) in enumerate(canvases)
    )
  return out


def _builder(dataset, data_config):
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import image_datasets  # pylint: disable=g-import-not-at-top

  d = data_config
  config = image_datasets.ImageConfig(
    name=f'h{d.image_height}w{d.image_width}_n{d.num_train_examples}-{d.num_eval_examples}_d{d.task_max_len}_s{d.seed}',
    num_train=d.num_train_examples,
    num_eval=d.num_eval_examples,
    max_digits=d.task_max_len,
    seed=d.seed,
    height=d.image_height,
    width=d.image_width,
    channels=d.image_channels,
    dataset=dataset,
  )
  return image_datasets.make_builder(config, builders.data_dir(d))


SPEC = spec.Dataset(
  name='digits_captions',
  source='image',
  builder=_builder,
  reader=family.image_reader,
  read=_read,
  features=('image', 'caption'),
)
