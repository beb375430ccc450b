"""The source side of a dataset: its frontend, which turns one source example into the steps a model reads.

Every dataset reads its sources through one frontend, of its source kind (`source_kind`, the registry's kinds):
  'text'   a vocabulary (`vocab.Vocab`: a token table or a SentencePiece model): a string -> token ids [S];
  'audio'  an `audio.AudioFrontend`: an `audio.Clip` -> log-mel frames [S, num_mel];
  'image'  an `images.ImageFrontend`: an `images.Picture` -> pixel columns [W, H * C].
The target side is always a vocabulary. A frontend is saved as the workdir's `vocab.src.json` (the file keeps that
name: the workdir contract, CONVENTIONS §5) and hashed into provenance.json beside the target vocabulary; `load`
reads any kind back. `inputs.py` reads a raw input line (a sentence, or the path of an audio or image file) through
the frontend for the translate / evaluate tools.
"""

import json
from typing import Any
from typing import Protocol

from s2s_jax.data import audio
from s2s_jax.data import images
from s2s_jax.data import vocab as vocab_lib


class Frontend(Protocol):
  """What every kind of frontend has (all are `saved.SavedJson`)."""

  source_kind: str  # 'text', 'audio' or 'image'

  def encode(self, example: Any) -> Any:
    """One source example (a string, a clip or a picture) -> its steps (token ids, frames or columns)."""

  def settings(self) -> dict[str, object]:
    """What it was built with, to compare with what the config asks for."""

  def sha256(self) -> str:
    """The hash of its saved content (provenance's tokenizer hash)."""

  def save(self, path: str) -> None:
    """Writes it as JSON (atomically)."""


def from_dict(d: dict) -> Frontend:
  """The frontend of a `to_dict()`; a malformed one raises KeyError, TypeError or ValueError."""
  if d['kind'] == 'audio':
    return audio.AudioFrontend.from_dict(d)
  if d['kind'] == 'image':
    return images.ImageFrontend.from_dict(d)
  return vocab_lib.from_dict(d)


def load(path: str) -> Frontend:
  """The frontend saved at `path` (a workdir's vocab.src.json), of whichever kind; a missing or corrupt file is a
  ValueError."""
  try:
    with open(path, encoding='utf-8') as f:
      return from_dict(json.load(f))
  except (OSError, ValueError, KeyError, TypeError) as e:  # TypeError: valid JSON of the wrong shape
    raise ValueError(f'Cannot read the frontend {path}: {e}. Delete it to rebuild it from the data.') from e
