"""What a model reads, from raw input lines: the input abstraction of the translate / evaluate tools.

An input kind turns one raw line (a sentence; for audio and image models a file path) into a source example through
the run's frontend (s2s_jax/data/frontend.py); `collate` pads examples into a batch. `labels` names an
example's steps (tokens, frame times, image columns), which the model's source input (`s2s_jax/encoders.py`) maps to
its memory's steps for attention plots. `for_config` picks the kind from the frontend's source kind.
"""

from collections.abc import Sequence
from typing import Protocol
import zlib

import jax
import numpy as np

from s2s_jax.data import EOS_ID
from s2s_jax.data import PAD_ID
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


def collate(
  sources: Sequence[np.ndarray],
  batch_size: int,
  src_len: int,
  targets: Sequence[np.ndarray] | None = None,
  tgt_len: int = 0,
  like: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
  """The one way examples become a batch (training, evaluation and inference): `batch_size` rows padded to `src_len`
  source steps (and `tgt_len` target steps); the rows after the examples are empty (mask 0, target PAD: no loss).

  Args:
    sources: token ids [S] or feature frames [S, F] (audio frames, image columns), each at most `src_len` steps.
    batch_size: rows of the batch, at least len(sources).
    src_len: padded source steps: token ids are padded with PAD, frames with zero frames.
    targets: target ids [T] of the same examples, at most `tgt_len` each; None: a batch without 'targets'.
    tgt_len: padded target steps (with targets).
    like: an example whose dtype and step shape an empty `sources` takes (default: int32 token ids).

  Returns:
    {'inputs': [batch_size, src_len(, F)], 'inputs_mask': int32 [batch_size, src_len], 'targets': int32
    [batch_size, tgt_len] (with targets)}.
  """
  if len(sources) > batch_size:
    raise ValueError(f'{len(sources)} examples do not fit a batch of {batch_size}.')
  first = sources[0] if len(sources) else like if like is not None else np.zeros((0,), np.int32)
  inputs = np.full((batch_size, src_len) + first.shape[1:], PAD_ID, first.dtype)
  mask = np.zeros((batch_size, src_len), np.int32)
  for row, src in enumerate(sources):
    if len(src) > src_len:
      raise ValueError(f'An example of {len(src)} source steps does not fit a batch of {src_len} steps.')
    inputs[row, : len(src)], mask[row, : len(src)] = src, 1
  batch = {'inputs': inputs, 'inputs_mask': mask}
  if targets is not None:
    batch['targets'] = np.full((batch_size, tgt_len), PAD_ID, np.int32)
    for row, tgt in enumerate(targets):
      if len(tgt) > tgt_len:
        raise ValueError(f'An example of {len(tgt)} target steps does not fit a batch of {tgt_len} steps.')
      batch['targets'][row, : len(tgt)] = tgt
  return batch


def line_key(line: str) -> int:
  """The content key of an input line (crc32 of its UTF-8 text): sampling draws a line's samples from
  fold_in(PRNGKey(seed), line_key(line)), so they do not depend on the line's position or batch."""
  return zlib.crc32(line.encode('utf-8'))


@jax.jit
def _fold_in_rows(rng: jax.Array, row_keys: jax.Array) -> jax.Array:
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, row_keys)


def row_rngs(seed: int, row_keys: np.ndarray) -> np.ndarray:
  """One PRNG key per batch row, fold_in(PRNGKey(seed), key of the row's input): uint32 [B, 2]."""
  return np.asarray(_fold_in_rows(jax.random.PRNGKey(seed), np.asarray(row_keys, np.uint32)))
