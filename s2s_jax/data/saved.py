"""The file form shared by vocabularies and frontends: `vocab.{src,tgt}.json` in a workdir.

A source side's frontend (s2s_jax/data/frontend.py: a `vocab.Vocab`, an `audio.AudioFrontend` or an
`images.ImageFrontend`) and a target side's vocabulary are SavedJson: JSON of `to_dict()`, `sha256()` and `save()`.
"""

import abc
import hashlib
import json

from s2s_jax import fileio


class SavedJson(abc.ABC):
  """JSON of `to_dict()`, its sha256 (provenance's tokenizer hash) and an atomic save; subclasses give to_dict."""

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
