"""The file form shared by vocabularies and input frontends: `vocab.{src,tgt}.json` in a workdir.

A source "vocabulary" is one of three kinds of SavedJson, told apart by `source_kind` (the registry's source kinds):
`vocab.Vocab` ('text': token ids), `audio.AudioFrontend` ('audio': log-mel frames) and `images.ImageFrontend`
('image': pixel columns). All have `settings()`, `sha256()` and `save()`; `vocab.load` reads any of them back.
"""

import abc
import hashlib
import json

from s2s_jax import fileio


class SavedJson(abc.ABC):
  """JSON of `to_dict()`, its sha256 (provenance's tokenizer hash) and an atomic save; subclasses give to_dict."""

  source_kind = 'text'  # what a model reads through it as a source: 'text', 'audio' or 'image'

  @abc.abstractmethod
  def to_dict(self) -> dict[str, object]:
    """The saved content (a subclass without it cannot be instantiated)."""

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), ensure_ascii=False, indent=0)

  def sha256(self) -> str:
    """Hash of the saved file's content (tokens or model bytes, and settings): the tokenizer hash of provenance."""
    return hashlib.sha256(self.to_json().encode('utf-8')).hexdigest()

  def save(self, path: str) -> None:
    fileio.write_text(path, self.to_json())
