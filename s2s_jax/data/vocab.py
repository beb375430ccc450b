"""Vocabularies with the project's reserved ids (PAD=0, UNK=1, BOS=2, EOS=3), stored as JSON in the workdir.

`char` splits text into characters (spaces included) and joins them back; `word` splits on whitespace and joins with
single spaces. Both round-trip the text they were built from (modulo lowercasing and whitespace runs for `word`).
"""
import collections
from collections.abc import Iterable, Sequence
import hashlib
import json
import os

from s2s_jax.data import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID

TOKENIZERS = ('char', 'word')


class Vocab:
  """A token <-> id table for one side (source or target) of a dataset."""

  def __init__(self, tokens: Sequence[str], kind: str, lowercase: bool = False):
    if kind not in TOKENIZERS:
      raise ValueError(f'Unknown tokenizer {kind!r}; choose one of {TOKENIZERS}.')
    if tuple(tokens[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise ValueError(f'A vocabulary must start with {SPECIAL_TOKENS}, got {list(tokens[:4])}.')
    if len(set(tokens)) != len(tokens):
      raise ValueError('A vocabulary must not repeat tokens.')
    self.tokens = list(tokens)
    self.kind = kind
    self.lowercase = lowercase
    self._ids = {t: i for i, t in enumerate(self.tokens)}

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocab) and self.to_json() == other.to_json()

  @classmethod
  def build(cls, texts: Iterable[str], kind: str, *, lowercase: bool = False, min_count: int = 1,
            max_size: int = 0) -> 'Vocab':
    """Most frequent tokens first (ties broken alphabetically, so the result is deterministic)."""
    counts = collections.Counter()
    probe = cls(SPECIAL_TOKENS, kind, lowercase)
    for text in texts:
      counts.update(probe.tokenize(text))
    ranked = sorted((t for t, n in counts.items() if n >= min_count and t not in SPECIAL_TOKENS),
                    key=lambda t: (-counts[t], t))
    if max_size:
      ranked = ranked[:max(0, max_size - len(SPECIAL_TOKENS))]
    return cls(list(SPECIAL_TOKENS) + ranked, kind, lowercase)

  def tokenize(self, text: str) -> list[str]:
    if self.lowercase:
      text = text.lower()
    return list(text) if self.kind == 'char' else text.split()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS or EOS; unknown tokens, and the text of special tokens, map to UNK.

    A literal '</s>' or '<pad>' in the data is text, never a control id (it would otherwise end or hide a sequence).
    """
    num_special = len(SPECIAL_TOKENS)
    return [i if (i := self._ids.get(t, UNK_ID)) >= num_special else UNK_ID for t in self.tokenize(text)]

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to the first EOS; PAD and BOS are dropped, UNK shows as <unk>."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i in (PAD_ID, BOS_ID):
        continue
      out.append(self.tokens[i] if 0 <= i < len(self.tokens) else self.tokens[UNK_ID])
    return ''.join(out) if self.kind == 'char' else ' '.join(out)

  def to_json(self) -> str:
    return json.dumps({'kind': self.kind, 'lowercase': self.lowercase, 'tokens': self.tokens},
                      ensure_ascii=False, indent=0)

  def sha256(self) -> str:
    return hashlib.sha256(self.to_json().encode('utf-8')).hexdigest()

  def save(self, path: str) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.write(self.to_json())
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> 'Vocab':
    try:
      with open(path, encoding='utf-8') as f:
        d = json.load(f)
      return cls(d['tokens'], d['kind'], d['lowercase'])
    except (OSError, ValueError, KeyError, TypeError) as e:  # TypeError: valid JSON of the wrong shape
      raise ValueError(f'Cannot read the vocabulary {path}: {e}. Delete it to rebuild it from the data.') from e
