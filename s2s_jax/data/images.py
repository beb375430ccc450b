"""Images as a model source: the image frontend (the frontend of an image dataset, s2s_jax/data/frontend.py).

An image example is float32 [W, H * C] in [0, 1]: its columns, left to right, are the source steps (so padding,
batching and bucketing treat images like audio frames), and `encoders.GridEncoder` folds them back into [W, H, C] for
its convolutions. An `ImageFrontend` (height, width, channels) is saved as the workdir's `vocab.src.json` (kind
'image'). The datasets of images with captions are in `image_datasets.py`.
"""

import dataclasses

import numpy as np

from s2s_jax.data import saved


@dataclasses.dataclass(frozen=True)
class Picture:
  """One image example before the frontend: a name and uint8 pixels [H, W, C]."""

  name: str
  pixels: np.ndarray


def read_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
  """uint8 [height, width, channels] of an image file (grey for 1 channel, RGB for 3); ValueError naming it."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from PIL import UnidentifiedImageError  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(path) as im:
      im = im.convert('L' if channels == 1 else 'RGB').resize((width, height), Image.BILINEAR)
      return np.asarray(im, np.uint8).reshape(height, width, channels)
  except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f'{path}: not a readable image ({e}).') from e


@dataclasses.dataclass(frozen=True)
class ImageFrontend(saved.SavedJson):
  """Pictures -> float32 columns [W, H * C] in [0, 1]: the frontend of a captioning dataset."""

  height: int
  width: int
  channels: int
  kind: str = 'image'
  source_kind = 'image'  # a class attribute, not a field

  @property
  def num_features(self) -> int:
    return self.height * self.channels

  def encode(self, picture: Picture) -> np.ndarray:
    pixels = picture.pixels.reshape(picture.pixels.shape[:2] + (-1,))
    if pixels.shape != (self.height, self.width, self.channels):
      raise ValueError(
        f'{picture.name}: image of {pixels.shape} (H, W, C); this model reads '
        f'{(self.height, self.width, self.channels)}.'
      )
    return (pixels.transpose(1, 0, 2).reshape(self.width, -1) / 255.0).astype(np.float32)

  def read(self, path: str) -> Picture:
    return Picture(path, read_image(path, self.height, self.width, self.channels))

  def settings(self) -> dict[str, object]:
    return {'kind': self.kind, 'height': self.height, 'width': self.width, 'channels': self.channels}

  def to_dict(self) -> dict[str, object]:
    return self.settings()

  @classmethod
  def from_dict(cls, d: dict[str, object]) -> 'ImageFrontend':
    return cls(int(d['height']), int(d['width']), int(d['channels']))
