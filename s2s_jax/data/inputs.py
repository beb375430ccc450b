"""What a model reads, from raw input lines: the input abstraction of the translate / evaluate tools.

An input kind turns one raw line (a sentence; for audio and image models a file path) into a source example and
pads examples into a batch {'inputs', 'inputs_mask'}. Text is the only kind the generated and text datasets need;
speech and image kinds plug in by implementing the same three methods and being returned by `for_config`.
"""
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from s2s_jax.data import EOS_ID, PAD_ID, SPECIAL_TOKENS
from s2s_jax.data import vocab as vocab_lib


class InputKind(Protocol):
  max_len: int

  def encode(self, line: str) -> tuple[np.ndarray, bool]:
    """(example, whether it was truncated to max_len)."""

  def collate(self, examples: Sequence[np.ndarray], batch_size: int, length: int) -> dict[str, np.ndarray]:
    """A batch of `batch_size` rows padded to `length` steps (missing rows are empty, mask 0)."""

  def labels(self, example: np.ndarray) -> list[str]:
    """One label per source step, for attention plots."""


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
    if len(examples) > batch_size:
      raise ValueError(f'{len(examples)} examples do not fit a batch of {batch_size}.')
    inputs = np.full((batch_size, length), PAD_ID, np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    for i, ids in enumerate(examples):
      inputs[i, :len(ids)] = ids
      mask[i, :len(ids)] = 1
    return {'inputs': inputs, 'inputs_mask': mask}

  def labels(self, example: np.ndarray) -> list[str]:
    return [SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.vocab.tokens[i] for i in example]


def for_config(config, src_vocab: vocab_lib.Vocab) -> InputKind:
  """The input kind of a run's dataset (text for every dataset so far)."""
  return TextInputs(src_vocab, config.data.max_src_len, reverse=config.data.reverse_source)
