"""What a model reads, from raw input lines: the input abstraction of the translate / evaluate tools.

An input kind turns one raw line (a sentence; for audio and image models a file path) into a source example and
pads examples into a batch {'inputs', 'inputs_mask'}; `labels` names the encoder memory's steps for attention plots.
`for_config` picks the kind from a run's source "vocabulary": a text vocabulary, an audio or an image frontend.
"""
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from s2s_jax.data import EOS_ID, PAD_ID, SPECIAL_TOKENS
from s2s_jax.data import audio
from s2s_jax.data import images
from s2s_jax.data import vocab as vocab_lib


def source_fields(src_vocab) -> dict[str, object]:
  """The model fields a dataset's source side sets: input_kind, input_features, image_channels."""
  if isinstance(src_vocab, audio.AudioFrontend):
    return {'input_kind': 'frames', 'input_features': src_vocab.num_features, 'image_channels': 1}
  if isinstance(src_vocab, images.ImageFrontend):
    return {'input_kind': 'image', 'input_features': src_vocab.num_features, 'image_channels': src_vocab.channels}
  return {'input_kind': 'tokens', 'input_features': 0, 'image_channels': 1}


def collate_sources(examples: Sequence[np.ndarray], batch_size: int, length: int) -> dict[str, np.ndarray]:
  """Token ids [S] or feature frames [S, F] padded (PAD / zero frames) into a batch of `batch_size` rows."""
  if len(examples) > batch_size:
    raise ValueError(f'{len(examples)} examples do not fit a batch of {batch_size}.')
  first = examples[0] if len(examples) else np.zeros((0,), np.int32)
  inputs = np.full((batch_size, length) + first.shape[1:], PAD_ID, first.dtype)
  mask = np.zeros((batch_size, length), np.int32)
  for i, x in enumerate(examples):
    inputs[i, :len(x)] = x[:length]
    mask[i, :len(x)] = 1
  return {'inputs': inputs, 'inputs_mask': mask}


class InputKind(Protocol):
  max_len: int

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    """(example, whether it was truncated to max_len)."""

  def collate(self, examples: Sequence[np.ndarray], batch_size: int, length: int) -> dict[str, np.ndarray]:
    """A batch of `batch_size` rows padded to `length` steps (missing rows are empty, mask 0)."""

  def labels(self, example: np.ndarray) -> list[str]:
    """One label per step of the encoder's memory (the attention's columns), for attention plots."""


class TextInputs:
  """A line of text -> source token ids ending in EOS, at most max_len of them."""

  def __init__(self, vocab: vocab_lib.Vocab, max_len: int, reverse: bool = False):
    self.vocab, self.max_len, self.reverse = vocab, max_len, reverse

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    ids = self.vocab.encode(line)
    ids = ids[::-1] if self.reverse else ids
    truncated = len(ids) + 1 > self.max_len
    return np.asarray(ids[:self.max_len - 1] + [EOS_ID], np.int32), truncated

  def collate(self, examples: Sequence[np.ndarray], batch_size: int, length: int) -> dict[str, np.ndarray]:
    return collate_sources(examples, batch_size, length)

  def labels(self, example: np.ndarray) -> list[str]:
    return [SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.vocab.tokens[i] for i in example]


class AudioInputs:
  """A line naming an audio file -> log-mel frames [frames, num_mel], at most max_len frames."""

  def __init__(self, frontend: audio.AudioFrontend, max_len: int, memory_stride: int = 1):
    self.frontend, self.max_len, self.memory_stride = frontend, max_len, memory_stride

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    frames = self.frontend.encode(self.frontend.read(line.strip()))
    return frames[:self.max_len], len(frames) > self.max_len

  def collate(self, examples: Sequence[np.ndarray], batch_size: int, length: int) -> dict[str, np.ndarray]:
    return collate_sources(examples, batch_size, length)

  def labels(self, example: np.ndarray) -> list[str]:
    """The start time (seconds) of every memory step, `memory_stride` frames apart."""
    steps = -(-len(example) // self.memory_stride)
    return [f'{i * self.memory_stride * audio.HOP_MS / 1000:.2f}' for i in range(steps)]


class ImageInputs:
  """A line naming an image file -> float32 columns [W, H * C] (resized to the training size)."""

  def __init__(self, frontend: images.ImageFrontend, model_config):
    self.frontend, self.max_len = frontend, frontend.width
    self.grid_width, self.grid_height = frontend.width, frontend.height
    for _ in range(model_config.cnn_layers):
      self.grid_width, self.grid_height = -(-self.grid_width // 2), -(-self.grid_height // 2)

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    return self.frontend.encode(self.frontend.read(line.strip())), False

  def collate(self, examples: Sequence[np.ndarray], batch_size: int, length: int) -> dict[str, np.ndarray]:
    return collate_sources(examples, batch_size, length)

  def labels(self, example: np.ndarray) -> list[str]:
    """Grid cells column by column: 'x<column>y<row>'."""
    del example
    return [f'x{i}y{j}' for i in range(self.grid_width) for j in range(self.grid_height)]

  def pixels(self, example: np.ndarray) -> np.ndarray:
    """The example as an image [H, W, C] in [0, 1], for attention overlays."""
    f = self.frontend
    return example.reshape(f.width, f.height, f.channels).transpose(1, 0, 2)


def memory_stride(model_config) -> int:
  """Source frames per encoder memory step: the subsampling convolutions times the pyramid's halvings."""
  return model_config.frame_stride * (2 ** (model_config.num_layers - 1) if model_config.pyramid else 1)


def for_config(config, src_vocab) -> InputKind:
  """The input kind of a run's dataset: text, audio (a speech dataset's frontend) or images."""
  if isinstance(src_vocab, audio.AudioFrontend):
    return AudioInputs(src_vocab, config.data.max_src_len, memory_stride(config.model))
  if isinstance(src_vocab, images.ImageFrontend):
    return ImageInputs(src_vocab, config.model)
  return TextInputs(src_vocab, config.data.max_src_len, reverse=config.data.reverse_source)
