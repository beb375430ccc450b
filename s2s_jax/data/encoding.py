"""Examples to ids under the length policy, in chunks that can be encoded in parallel and merged.

A source is a string (text), an `audio.Clip` or an `images.Picture`, which the source side's frontend
(s2s_jax/data/frontend.py) turns into token ids, frames or pixel columns; its length counts those steps. Training
examples that are empty, or longer than the limits under the `filter` policy, are dropped and counted; under
`truncate` (and always for evaluation splits) they are cut (EOS kept) and counted.
"""

import collections
from collections.abc import Sequence
import dataclasses
from typing import Any

import numpy as np

from s2s_jax.data import EOS_ID
from s2s_jax.data import UNK_ID

SIDES = ('source', 'target')


@dataclasses.dataclass(frozen=True)
class LengthPolicy:
  """The data fields that decide what an example's ids are (besides the vocabularies)."""

  max_src_len: int
  max_tgt_len: int
  src_policy: str
  tgt_policy: str
  reverse_source: bool

  @classmethod
  def of(cls, data_config) -> 'LengthPolicy':
    d = data_config
    return cls(d.max_src_len, d.max_tgt_len, d.src_len_policy, d.tgt_len_policy, bool(d.reverse_source))

  def limit(self, side: str) -> int:
    return self.max_src_len if side == 'source' else self.max_tgt_len

  def policy(self, side: str) -> str:
    return self.src_policy if side == 'source' else self.tgt_policy


@dataclasses.dataclass
class Encoded:
  """A chunk of examples encoded: the kept ones' ids, and what the data report counts over all of them."""

  kept: list[int]  # indices (in the chunk) of the kept examples
  src_ids: list[np.ndarray]
  tgt_ids: list[np.ndarray]
  lengths: dict[str, np.ndarray]  # side -> steps of every example (kept or not) before the policy
  filtered: collections.Counter
  truncated: collections.Counter
  unk: dict[str, int]

  def merge(self, other: 'Encoded') -> None:
    """Appends a later chunk (its indices shifted past this one's examples)."""
    offset = len(self.lengths['source'])
    self.kept += [offset + i for i in other.kept]
    self.src_ids += other.src_ids
    self.tgt_ids += other.tgt_ids
    self.lengths = {side: np.concatenate([self.lengths[side], other.lengths[side]]) for side in SIDES}
    self.filtered.update(other.filtered)  # (update keeps zero counts, which `+=` would drop)
    self.truncated.update(other.truncated)
    self.unk = {side: self.unk[side] + other.unk[side] for side in SIDES}


def _fit(ids, limit: int) -> np.ndarray:
  """Token ids + EOS, cut to `limit` tokens with EOS kept last; feature frames [frames, F] cut to `limit` frames."""
  if isinstance(ids, np.ndarray):
    return ids[:limit]
  ids = ids[: limit - 1] + [EOS_ID]
  return np.asarray(ids, np.int32)


def _steps(ids) -> int:
  """Source / target steps of an encoded example: tokens + EOS, or feature frames."""
  return len(ids) if isinstance(ids, np.ndarray) else len(ids) + 1


@dataclasses.dataclass
class Flat:
  """A chunk of text examples encoded in flat arrays: the counts of `encoded` (whose id lists are left empty) and,
  per side, the kept examples' ids (EOS included, length policy applied) concatenated, with each one's length."""

  encoded: Encoded
  ids: dict[str, np.ndarray]  # side -> int32 [sum of lengths]
  lengths: dict[str, np.ndarray]  # side -> int64 [kept examples]

  def records(self) -> tuple[bytes, list[int]]:
    """Every kept example as one int32 record [len(source ids), source ids..., target ids...], concatenated, and
    the records' byte offsets (len + 1 of them)."""
    src, tgt = self.lengths['source'], self.lengths['target']
    size = 1 + src + tgt
    starts = np.cumsum(size) - size
    out = np.empty(int(size.sum()), np.int32)
    out[starts] = src
    _scatter(out, starts + 1, self.ids['source'], src)
    _scatter(out, starts + 1 + src, self.ids['target'], tgt)
    offsets = np.concatenate([[0], np.cumsum(size) * 4])
    return out.tobytes(), offsets.tolist()


def _scatter(out: np.ndarray, starts: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> None:
  """out[starts[i] : starts[i] + lengths[i]] = the i-th segment of the concatenated `values`, for every i."""
  within = np.arange(len(values)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  out[np.repeat(starts, lengths) + within] = values


def _gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
  """The segments values[starts[i] : starts[i] + lengths[i]], concatenated."""
  within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
  return values[np.repeat(starts, lengths) + within]


def encode_flat(pairs: Sequence[tuple[str, str]], src_vocab, tgt_vocab, policy: LengthPolicy, train: bool) -> Flat:
  """`encode` of text pairs in array operations: the same ids, kept examples and counts, without a Python step
  per token (the vocabularies' `encode_many`) or per example (the policy on length arrays)."""
  ids, counts = {}, {}
  ids['source'], counts['source'] = src_vocab.encode_many([src for src, _ in pairs])
  ids['target'], counts['target'] = tgt_vocab.encode_many([tgt for _, tgt in pairs])
  starts = {side: np.cumsum(counts[side]) - counts[side] for side in SIDES}
  if policy.reverse_source:  # Sutskever et al. 2014: each source backwards (EOS still last)
    n = counts['source']
    row_end = np.repeat(2 * starts['source'] + n - 1, n)
    ids['source'] = ids['source'][row_end - np.arange(len(ids['source']))]
  steps = {side: counts[side] + 1 for side in SIDES}
  unk = {side: int(np.count_nonzero(ids[side] == UNK_ID)) for side in SIDES}
  # The reason an example is dropped: the source's (empty, else too long) before the target's, as in `encode`.
  reason = np.full(len(pairs), '', dtype=object)
  if train:
    for side in reversed(SIDES):
      too_long = (steps[side] > policy.limit(side)) if policy.policy(side) == 'filter' else False
      reason = np.where(too_long, f'{side}_too_long', reason)
      reason = np.where(counts[side] == 0, f'empty_{side}', reason)  # empty wins over too long
  keep = reason == ''
  filtered = collections.Counter(reason[~keep].tolist())
  kept = np.flatnonzero(keep)
  truncated = collections.Counter()
  fitted_ids, fitted_lengths = {}, {}
  for side in SIDES:
    if len(kept):
      truncated[side] = int(np.count_nonzero(steps[side][kept] > policy.limit(side)))
    stop = policy.limit(side) - 1  # `_fit` keeps ids[:stop] (a Python slice) and appends EOS
    n = counts[side][kept]
    take = np.minimum(n, stop) if stop >= 0 else np.maximum(n + stop, 0)
    tokens = _gather(ids[side], starts[side][kept], take)
    fitted_lengths[side] = take + 1
    fitted = np.full(int(fitted_lengths[side].sum()), EOS_ID, np.int32)
    _scatter(fitted, np.cumsum(take + 1) - (take + 1), tokens, take)
    fitted_ids[side] = fitted
  lengths = {side: steps[side].astype(np.int32) for side in SIDES}
  encoded = Encoded(kept.tolist(), [], [], lengths, filtered, truncated, unk)
  return Flat(encoded, fitted_ids, fitted_lengths)


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
  return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def encode(pairs: Sequence[tuple[Any, str]], frontend, tgt_vocab, policy: LengthPolicy, train: bool) -> Encoded:
  """Encodes `pairs` (sources through the `frontend`) and applies the length policy."""
  if hasattr(frontend, 'encode_many') and hasattr(tgt_vocab, 'encode_many'):  # text: `encode_flat`
    flat = encode_flat(pairs, frontend, tgt_vocab, policy, train)
    flat.encoded.src_ids = _split(flat.ids['source'], flat.lengths['source'])
    flat.encoded.tgt_ids = _split(flat.ids['target'], flat.lengths['target'])
    return flat.encoded
  return encode_each(pairs, frontend, tgt_vocab, policy, train)


def encode_each(pairs: Sequence[tuple[Any, str]], frontend, tgt_vocab, policy: LengthPolicy, train: bool) -> Encoded:
  """Encodes `pairs` one example at a time (any source: text, audio, image) and applies the length policy."""
  out = Encoded([], [], [], {}, collections.Counter(), collections.Counter(), {'source': 0, 'target': 0})
  lengths = {'source': [], 'target': []}
  for index, (src, tgt) in enumerate(pairs):
    ids = {'source': frontend.encode(src), 'target': tgt_vocab.encode(tgt)}
    # Sutskever et al. 2014: feed the source backwards (EOS still last)
    if policy.reverse_source and isinstance(src, str):
      ids['source'] = ids['source'][::-1]
    steps = {side: _steps(ids[side]) for side in SIDES}
    for side in SIDES:
      lengths[side].append(steps[side])
      if not isinstance(ids[side], np.ndarray):
        out.unk[side] += sum(i == UNK_ID for i in ids[side])
    drop = None
    for side in SIDES:
      if train and not len(ids[side]):
        drop = drop or f'empty_{side}'
      elif train and steps[side] > policy.limit(side) and policy.policy(side) == 'filter':
        drop = drop or f'{side}_too_long'
    if drop:
      out.filtered[drop] += 1
      continue
    for side in SIDES:
      out.truncated[side] += steps[side] > policy.limit(side)
    out.kept.append(index)
    out.src_ids.append(_fit(ids['source'], policy.max_src_len))
    out.tgt_ids.append(_fit(ids['target'], policy.max_tgt_len))
  out.lengths = {side: np.asarray(lengths[side], np.int32) for side in SIDES}
  return out


def _stats(lengths: np.ndarray) -> dict[str, float]:
  if not len(lengths):
    return {'min': 0, 'mean': 0.0, 'p50': 0, 'p95': 0, 'p99': 0, 'max': 0}
  a = np.asarray(lengths)
  return {
    'min': int(a.min()),
    'mean': round(float(a.mean()), 2),
    'p50': int(np.percentile(a, 50)),
    'p95': int(np.percentile(a, 95)),
    'p99': int(np.percentile(a, 99)),
    'max': int(a.max()),
  }


def report(encoded: Encoded) -> dict[str, Any]:
  """The split's entry of data_report.json (padding fractions are added once the padded lengths are known)."""
  lengths = encoded.lengths
  num_tokens = {side: max(1, int(lengths[side].sum()) - len(lengths[side])) for side in SIDES}
  return {
    'num_raw': len(lengths['source']),
    'num_examples': len(encoded.kept),
    'filtered': dict(encoded.filtered),
    'truncated': {side: int(n) for side, n in encoded.truncated.items()},
    'source_len': _stats(lengths['source']),
    'target_len': _stats(lengths['target']),
    'source_oov_rate': round(encoded.unk['source'] / num_tokens['source'], 6),
    'target_oov_rate': round(encoded.unk['target'] / num_tokens['target'], 6),
  }
