"""Vocabularies with the project's reserved ids (PAD=0, UNK=1, BOS=2, EOS=3), stored as JSON in the workdir.

Tokenizers (`TOKENIZERS`), all behind the same interface (`encode`, `decode`, `tokenize`, `tokens`, `save`, ...):
- `char` splits text into characters (spaces included) and joins them back;
- `word` splits on whitespace and joins with single spaces;
- `moses` runs sacremoses' punctuation normaliser and tokenizer for the vocabulary's language (`lang`; an empty or
  unknown code gets sacremoses' English rules) and joins tokens back with its detokenizer;
- `sentencepiece` is a unigram or BPE model of exactly `max_size` pieces trained on the training texts with the
  reserved ids above and identity normalisation: text is never rewritten (no NFKC), so decoding gives back the
  encoded text except for whitespace runs (collapsed, as `word` does) and characters never seen in training (UNK).
  Training is deterministic (one thread; the same texts give byte-identical models). The serialized model is stored
  base64 in the same JSON file, so `sha256()` covers the model bytes and the settings.
`Vocab` is what every vocabulary has; `char`, `word` and `moses` are token tables (`TokenTable`): most frequent
tokens first, limited by `min_count` and `max_size`; `sentencepiece` is a `SentencePieceVocab`. A text dataset's
source side reads through its vocabulary (its frontend, s2s_jax/data/frontend.py); every target side is one.
`decode(ids, detokenize=False)` gives the tokens joined by single spaces (what a tokenised BLEU compares); for
`char` and `word` both settings give the same text, for `sentencepiece` the tokens are its pieces ('▁' included).

No text ever becomes a control id: `word` and `sentencepiece` map the literal of a special token ('<pad>', '<unk>',
'<s>', '</s>') to UNK, `char` and `moses` split it into characters. `build` / `load` are the factories;
`from_token_file` imports another toolkit's vocabulary file, remapping it to the reserved ids.
"""

import abc
import base64
import collections
from collections.abc import Iterable
from collections.abc import Sequence
import io
import itertools
import json
import re

import numpy as np
import sacremoses
import sentencepiece as spm

from s2s_jax.data import BOS_ID
from s2s_jax.data import EOS_ID
from s2s_jax.data import PAD_ID
from s2s_jax.data import SPECIAL_TOKENS
from s2s_jax.data import UNK_ID
from s2s_jax.data import saved

TOKENIZERS = ('char', 'word', 'moses', 'sentencepiece')
SPM_MODEL_TYPES = ('unigram', 'bpe')
_TABLE_KINDS = ('char', 'word', 'moses')  # the kinds of `TokenTable`
_SPECIAL_RE = re.compile('|'.join(re.escape(t) for t in SPECIAL_TOKENS))
# A Unicode noncharacter ("for a process's internal use"), never in a SentencePiece model: where the text has a
# special token's literal, the model reads this character, an unknown one, so it encodes to UNK with the spacing kept.
_HOLE = '\ufdd0'


class Vocab(saved.SavedJson):
  """A text vocabulary for one side (source or target) of a dataset: ids of `tokens`, the reserved ones first."""

  source_kind = 'text'  # as a source side's frontend (s2s_jax/data/frontend.py)

  def __init__(self, tokens: Sequence[str], kind: str, lowercase: bool, lang: str = '', model_type: str = ''):
    self.tokens, self.kind, self.lowercase, self.lang, self.model_type = list(tokens), kind, lowercase, lang, model_type

  def __len__(self) -> int:
    return len(self.tokens)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocab) and self.to_json() == other.to_json()

  def __reduce__(self):  # pickled as its saved form (what data workers receive; a SentencePiece processor is not
    return from_dict, (self.to_dict(),)  # picklable, and a table's lookup dict is rebuilt faster than unpickled)

  @abc.abstractmethod
  def tokenize(self, text: str) -> list[str]:
    """The tokens of `text` (lowercased first when `lowercase`), before any mapping to ids."""

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without BOS or EOS; unknown tokens, and the text of special tokens, map to UNK.

    A literal '</s>' or '<pad>' in the data is text, never a control id (it would otherwise end or hide a sequence).
    """

  @abc.abstractmethod
  def encode_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of every text at once: (all ids concatenated as int32, each text's number of ids as int64)."""

  @abc.abstractmethod
  def _join(self, ids: list[int], detokenize: bool) -> str:
    """The text of ids that are neither control ids nor out of range."""

  def settings(self) -> dict[str, object]:
    """What the vocabulary was built with, to compare with `settings(...)` of a config; sizes excluded."""
    return settings(self.kind, lowercase=self.lowercase, lang=self.lang, model_type=self.model_type)

  def decode(self, ids: Iterable[int], detokenize: bool = True) -> str:
    """Text of `ids` up to the first EOS; PAD and BOS are dropped, UNK (and any id out of range) shows as <unk>.

    Args:
      ids: token ids, e.g. a model's output row (numpy or list).
      detokenize: False joins the tokens with single spaces instead of the tokenizer's detokenizer (moses,
        sentencepiece), which is what a tokenised BLEU compares; char and word ignore it.
    """
    return self._join(_strip_control(ids, len(self)), detokenize)


class TokenTable(Vocab):
  """A char/word/moses vocabulary: a table of tokens."""

  def __init__(self, tokens: Sequence[str], kind: str, lowercase: bool = False, lang: str = ''):
    if kind not in TOKENIZERS:
      raise ValueError(f'Unknown tokenizer {kind!r}; choose one of {TOKENIZERS}.')
    if kind not in _TABLE_KINDS:
      raise ValueError(f'A {kind} vocabulary is trained: use vocab.build(texts, {kind!r}, max_size=...).')
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise ValueError(f'A vocabulary must start with {SPECIAL_TOKENS}, got {list(tokens[:4])}.')
    if len(set(tokens)) != len(tokens):
      raise ValueError('A vocabulary must not repeat tokens.')
    super().__init__(tokens, kind, lowercase, lang if kind == 'moses' else '')
    # What encoding looks up: the literal of a special token is text, so it is absent here and reads as UNK.
    self._encode_ids = {t: i for i, t in enumerate(self.tokens) if i >= len(SPECIAL_TOKENS)}
    if kind == 'moses':  # built once per vocabulary, never per sentence
      self._moses = (
        sacremoses.MosesPunctNormalizer(self.lang),
        sacremoses.MosesTokenizer(self.lang),
        sacremoses.MosesDetokenizer(self.lang),
      )

  def tokenize(self, text: str) -> list[str]:
    if self.lowercase:
      text = text.lower()
    if self.kind == 'char':
      return list(text)
    if self.kind == 'word':
      return text.split()
    normalizer, tokenizer, _ = self._moses
    return tokenizer.tokenize(normalizer.normalize(text), escape=False)

  def encode(self, text: str) -> list[int]:
    get = self._encode_ids.get
    return [get(t, UNK_ID) for t in self.tokenize(text)]

  def encode_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The same ids as `encode` text by text, several times faster for `char` and `word` (no Python call per
    token)."""
    if self.lowercase and self.kind != 'moses':  # (moses lowercases in `tokenize`)
      texts = [t.lower() for t in texts]
    if self.kind == 'char':
      tokens, counts = itertools.chain.from_iterable(texts), map(len, texts)
    else:
      split = [t.split() for t in texts] if self.kind == 'word' else [self.tokenize(t) for t in texts]
      tokens, counts = itertools.chain.from_iterable(split), map(len, split)
    lengths = np.fromiter(counts, np.int64, count=len(texts))
    ids = map(self._encode_ids.get, tokens, itertools.repeat(UNK_ID))
    return np.fromiter(ids, np.int32, count=int(lengths.sum())), lengths

  def _join(self, ids: list[int], detokenize: bool) -> str:
    tokens = [self.tokens[i] for i in ids]
    if self.kind == 'char':
      return ''.join(tokens)
    if self.kind == 'moses' and detokenize:
      return self._moses[2].detokenize(tokens, unescape=False)
    return ' '.join(tokens)

  def to_dict(self) -> dict[str, object]:
    d = {'kind': self.kind, 'lowercase': self.lowercase}
    if self.kind == 'moses':
      d['lang'] = self.lang
    d['tokens'] = self.tokens
    return d


class SentencePieceVocab(Vocab):
  """A SentencePiece model whose pieces 0-3 are <pad>, <unk>, <s>, </s> (PAD, UNK, BOS, EOS)."""

  def __init__(self, model: bytes, lowercase: bool = False, model_type: str = 'unigram'):
    if model_type not in SPM_MODEL_TYPES:
      raise ValueError(f'Unknown SentencePiece model type {model_type!r}; choose one of {SPM_MODEL_TYPES}.')
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model)
    except RuntimeError as e:
      raise ValueError(f'Not a SentencePiece model: {e}') from e
    tokens = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
    reserved = [
      self._sp.is_control(PAD_ID),
      self._sp.is_unknown(UNK_ID),
      self._sp.is_control(BOS_ID),
      self._sp.is_control(EOS_ID),
    ]
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS or not all(reserved):
      raise ValueError(f'A SentencePiece model must start with {SPECIAL_TOKENS}, got {tokens[:4]}.')
    super().__init__(tokens, 'sentencepiece', lowercase, model_type=model_type)
    self.model = bytes(model)

  @classmethod
  def train(
    cls, texts: Iterable[str], *, lowercase: bool = False, max_size: int = 0, model_type: str = 'unigram'
  ) -> 'SentencePieceVocab':
    """Trains a model of exactly `max_size` pieces (the 4 reserved ones included) on `texts`.

    Training is deterministic: every sentence is used (no sampling or shuffling) and one thread (the thread count
    changes the model), so the same texts give byte-identical models and the same sha256.
    """
    if max_size <= 0:
      raise ValueError(f'sentencepiece needs a vocabulary size: set data.max_vocab_size > 0 (got {max_size}).')
    if model_type not in SPM_MODEL_TYPES:
      raise ValueError(f'Unknown SentencePiece model type {model_type!r}; choose one of {SPM_MODEL_TYPES}.')
    # Special-token literals are not trained on (they encode to UNK), nor is the hole that stands for them.
    sentences = (_SPECIAL_RE.sub(' ', t.lower() if lowercase else t).replace(_HOLE, ' ') for t in texts)
    model = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model,
        vocab_size=max_size,
        model_type=model_type,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_piece=SPECIAL_TOKENS[PAD_ID],
        unk_piece=SPECIAL_TOKENS[UNK_ID],
        bos_piece=SPECIAL_TOKENS[BOS_ID],
        eos_piece=SPECIAL_TOKENS[EOS_ID],
        unk_surface=SPECIAL_TOKENS[UNK_ID],
        character_coverage=1.0,
        normalization_rule_name='identity',
        byte_fallback=False,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=1,
      )
    except RuntimeError as e:
      message = str(e)
      if 'sentences_.empty()' in message:
        raise ValueError(f'sentencepiece: no training text to learn a vocabulary from ({message}).') from e
      hint = (
        'lower data.max_vocab_size'
        if 'too high' in message
        else 'raise data.max_vocab_size to cover every character of the training texts'
        if 'required_chars' in message
        else 'check data.max_vocab_size'
      )
      raise ValueError(
        f'sentencepiece cannot train {max_size} pieces on these texts; {hint}. SentencePiece says: {message}'
      ) from e
    return cls(model.getvalue(), lowercase, model_type)

  def tokenize(self, text: str) -> list[str]:
    """The pieces of `encode(text)` (unknown text shows as <unk>)."""
    return [self.tokens[i] for i in self.encode(text)]

  def encode(self, text: str) -> list[int]:
    """The model's ids of `text`, without BOS or EOS; unknown characters and special-token literals give UNK."""
    text = _SPECIAL_RE.sub(_HOLE, text.lower() if self.lowercase else text)
    num_special = len(SPECIAL_TOKENS)
    return [i if i >= num_special else UNK_ID for i in self._sp.encode(text)]

  def encode_many(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of every text at once (one call into SentencePiece): (ids concatenated as int32, ids per text)."""
    texts = [_SPECIAL_RE.sub(_HOLE, t.lower() if self.lowercase else t) for t in texts]
    encoded = self._sp.encode(texts)
    lengths = np.fromiter(map(len, encoded), np.int64, count=len(texts))
    ids = np.fromiter(itertools.chain.from_iterable(encoded), np.int32, count=int(lengths.sum()))
    return np.where(ids >= len(SPECIAL_TOKENS), ids, np.int32(UNK_ID)).astype(np.int32), lengths

  def _join(self, ids: list[int], detokenize: bool) -> str:
    return self._sp.decode(ids) if detokenize else ' '.join(self.tokens[i] for i in ids)

  def to_dict(self) -> dict[str, object]:
    return {
      'kind': self.kind,
      'lowercase': self.lowercase,
      'model_type': self.model_type,
      'model': base64.b64encode(self.model).decode('ascii'),
    }


def settings(kind: str, *, lowercase: bool = False, lang: str = '', model_type: str = 'unigram') -> dict[str, object]:
  """The settings a vocabulary built with these arguments reports (`Vocab.settings()`); unused ones are ''."""
  return {
    'kind': kind,
    'lowercase': lowercase,
    'lang': lang if kind == 'moses' else '',
    'model_type': model_type if kind == 'sentencepiece' else '',
  }


def build(
  texts: Iterable[str],
  kind: str,
  *,
  lowercase: bool = False,
  min_count: int = 1,
  max_size: int = 0,
  lang: str = '',
  model_type: str = 'unigram',
) -> Vocab:
  """Builds the vocabulary of `kind` from training texts (one pass over `texts`).

  Args:
    texts: the training texts of one side.
    kind: one of TOKENIZERS.
    lowercase: lowercase every text first (building, encoding and so decoding).
    min_count: char/word/moses: keep tokens seen at least this often.
    max_size: char/word/moses: at most this many entries, the 4 reserved ones included (0: no limit);
      sentencepiece: the number of pieces (required).
    lang: moses: the language code of the texts (e.g. 'de'); ignored by the other kinds.
    model_type: sentencepiece: 'unigram' or 'bpe'; ignored by the other kinds.

  Returns:
    A `TokenTable` (char/word/moses: most frequent tokens first, ties alphabetical, independent of the order of `texts`)
    or a `SentencePieceVocab`.
  """
  if kind == 'sentencepiece':
    return SentencePieceVocab.train(texts, lowercase=lowercase, max_size=max_size, model_type=model_type)
  counts = count_tokens(texts, kind, lowercase=lowercase, lang=lang)
  return from_counts(counts, kind, lowercase=lowercase, min_count=min_count, max_size=max_size, lang=lang)


def count_tokens(texts: Iterable[str], kind: str, *, lowercase: bool = False, lang: str = '') -> collections.Counter:
  """How often each token of a char/word/moses vocabulary occurs in `texts` (counts of several parts of a corpus
  add up to those of the whole: a large corpus is counted in parallel and summed)."""
  if kind not in TOKENIZERS:
    raise ValueError(f'Unknown tokenizer {kind!r}; choose one of {TOKENIZERS}.')
  if kind not in _TABLE_KINDS:
    raise ValueError(f'A {kind} vocabulary is trained, not counted: use vocab.build(texts, {kind!r}, max_size=...).')
  if kind == 'moses':
    probe = TokenTable(SPECIAL_TOKENS, kind, lowercase, lang)
    tokens = itertools.chain.from_iterable(map(probe.tokenize, texts))
  else:  # char / word: counted in one C loop (Counter of an iterator), not a call per text
    texts = (t.lower() for t in texts) if lowercase else texts
    tokens = itertools.chain.from_iterable(texts if kind == 'char' else map(str.split, texts))
  return collections.Counter(tokens)


def from_counts(
  counts: collections.Counter,
  kind: str,
  *,
  lowercase: bool = False,
  min_count: int = 1,
  max_size: int = 0,
  lang: str = '',
) -> Vocab:
  """The char/word/moses vocabulary of `count_tokens`' counts: most frequent first, ties alphabetical."""
  ranked = sorted(
    (t for t, n in counts.items() if n >= min_count and t not in SPECIAL_TOKENS), key=lambda t: (-counts[t], t)
  )
  if max_size:
    ranked = ranked[: max(0, max_size - len(SPECIAL_TOKENS))]
  return TokenTable(list(SPECIAL_TOKENS) + ranked, kind, lowercase, lang)


def load(path: str) -> Vocab:
  """The vocabulary saved at `path` by `save`, of whichever kind; a missing or corrupt file is a ValueError."""
  try:
    with open(path, encoding='utf-8') as f:
      return from_dict(json.load(f))
  except (OSError, ValueError, KeyError, TypeError) as e:  # TypeError: valid JSON of the wrong shape
    raise ValueError(f'Cannot read the vocabulary {path}: {e}. Delete it to rebuild it from the data.') from e


def from_dict(d: dict) -> Vocab:
  """The vocabulary of a `to_dict()` (frontend.from_dict reads any source side); a malformed one raises KeyError,
  TypeError or ValueError."""
  if d['kind'] == 'sentencepiece':
    return SentencePieceVocab(base64.b64decode(d['model'], validate=True), d['lowercase'], d['model_type'])
  return TokenTable(d['tokens'], d['kind'], d['lowercase'], d['lang'] if d['kind'] == 'moses' else '')


def from_token_file(path: str, kind: str, lowercase: bool = False, lang: str = '') -> Vocab:
  """Imports another toolkit's vocabulary file (one token per line), remapped to the reserved ids.

  Special tokens in the file (e.g. the Stanford NMT files' leading '<unk>', '<s>', '</s>') are dropped and ours come
  first, so file line k is not id k. Empty lines are skipped; with `lowercase` tokens are lowercased; a repeated
  token keeps its first place.
  """
  if kind not in _TABLE_KINDS:
    raise ValueError(f'A token file gives a {"/".join(_TABLE_KINDS)} vocabulary, not {kind!r}.')
  with open(path, encoding='utf-8') as f:
    lines = (line.rstrip('\r\n') for line in f)
    tokens = dict.fromkeys(t.lower() if lowercase else t for t in lines if t)
  return TokenTable(list(SPECIAL_TOKENS) + [t for t in tokens if t not in SPECIAL_TOKENS], kind, lowercase, lang)


def _strip_control(ids: Iterable[int], size: int) -> list[int]:
  """The ids before the first EOS without PAD and BOS; ids out of range become UNK."""
  out = []
  for i in ids:
    i = int(i)
    if i == EOS_ID:
      break
    if i not in (PAD_ID, BOS_ID):
      out.append(i if 0 <= i < size else UNK_ID)
  return out
