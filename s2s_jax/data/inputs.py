"""What a model reads, from raw input lines: the input abstraction of the translate / evaluate tools.

An input kind turns one raw line (a sentence; for audio and image models a file path) into a source example through
the run's frontend (s2s_jax/data/frontend.py); `batches.collate` pads examples into a batch. `labels` names an
example's steps (tokens, frame times, image columns), which the model's source input (`s2s_jax/encoders.py`) maps to
its memory's steps for attention plots. `for_config` picks the kind from the frontend's source kind.
"""

from typing import Protocol

import numpy as np

from s2s_jax.data import EOS_ID
from s2s_jax.data import SPECIAL_TOKENS
from s2s_jax.data import audio
from s2s_jax.data import frontend as frontend_lib
from s2s_jax.data import images
from s2s_jax.data import registry
from s2s_jax.data import vocab as vocab_lib


def source_fields(frontend: frontend_lib.Frontend) -> dict[str, object]:
  """The model fields a dataset's frontend (its `source_kind`) sets: input_kind, input_features, image_channels."""
  kind = frontend.source_kind
  return {
    'input_kind': registry.INPUT_KINDS[kind],
    'input_features': 0 if kind == 'text' else frontend.num_features,
    'image_channels': frontend.channels if kind == 'image' else 1,
  }


class InputKind(Protocol):
  max_len: int

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    """(example, whether it was truncated to max_len)."""

  def labels(self, example: np.ndarray) -> list[str]:
    """One label per step of the example (`encoders.SourceInput.memory_labels` maps them to memory steps)."""


class TextInputs:
  """A line of text -> source token ids ending in EOS, at most max_len of them."""

  def __init__(self, vocab: vocab_lib.Vocab, max_len: int, reverse: bool = False):
    self.vocab, self.max_len, self.reverse = vocab, max_len, reverse

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    ids = self.vocab.encode(line)
    ids = ids[::-1] if self.reverse else ids
    truncated = len(ids) + 1 > self.max_len
    return np.asarray(ids[: self.max_len - 1] + [EOS_ID], np.int32), truncated

  def labels(self, example: np.ndarray) -> list[str]:
    return [SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.vocab.tokens[i] for i in example]


class AudioInputs:
  """A line naming an audio file -> log-mel frames [frames, num_mel], at most max_len frames."""

  def __init__(self, frontend: audio.AudioFrontend, max_len: int):
    self.frontend, self.max_len = frontend, max_len

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    frames = self.frontend.encode(self.frontend.read(line.strip()))
    return frames[: self.max_len], len(frames) > self.max_len

  def labels(self, example: np.ndarray) -> list[str]:
    """The start time (seconds) of every frame."""
    return [f'{i * audio.HOP_MS / 1000:.2f}' for i in range(len(example))]


class ImageInputs:
  """A line naming an image file -> float32 columns [W, H * C] (resized to the training size)."""

  def __init__(self, frontend: images.ImageFrontend):
    self.frontend, self.max_len = frontend, frontend.width

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    return self.frontend.encode(self.frontend.read(line.strip())), False

  def labels(self, example: np.ndarray) -> list[str]:
    """The image's pixel columns: 'x<column>'."""
    del example
    return [f'x{i}' for i in range(self.frontend.width)]

  def pixels(self, example: np.ndarray) -> np.ndarray:
    """The example as an image [H, W, C] in [0, 1], for attention overlays."""
    f = self.frontend
    return example.reshape(f.width, f.height, f.channels).transpose(1, 0, 2)


def for_config(config, frontend: frontend_lib.Frontend) -> InputKind:
  """The input kind of a run's frontend: text (its vocabulary), audio or images."""
  if frontend.source_kind == 'audio':
    return AudioInputs(frontend, config.data.max_src_len)
  if frontend.source_kind == 'image':
    return ImageInputs(frontend)
  return TextInputs(frontend, config.data.max_src_len, reverse=config.data.reverse_source)
