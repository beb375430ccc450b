"""Length bucketing and token-based batching of the training split, as a checkpointable grain data source.

Examples are grouped into `num_buckets` buckets of about equal size by source + target length; each bucket pads to
its own longest source and target (rounded up to a multiple of 8), so the train step compiles once per bucket
shape. A batch holds `batch_size` examples, or with `batch_tokens` about that many padded target tokens
(a per-bucket batch size, a multiple of `multiple` = devices x accumulation steps). Every epoch shuffles the
examples within each bucket and the order of all batches (seeded by seed and epoch); the last batch of a bucket is
filled with empty rows (mask 0, target PAD, so they carry no loss), so every example is seen exactly once per epoch.
Element i of the source is global batch i; grain's iterator state (an index) makes resumption exact.
"""
import dataclasses
import functools

import numpy as np

from s2s_jax.data import PAD_ID

_ROUND = 8
_EPOCHS = 1_000_000  # the source is "endless": this many epochs


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class Bucket:
  example_ids: np.ndarray  # indices into the split
  src_len: int  # padded lengths of this bucket's batches
  tgt_len: int
  batch_size: int


def make_buckets(src_lengths: np.ndarray, tgt_lengths: np.ndarray, *, num_buckets: int, batch_size: int,
                 batch_tokens: int, multiple: int, src_cap: int, tgt_cap: int) -> list[Bucket]:
  """Equal-count buckets by source + target length, with padded shapes and batch sizes."""
  order = np.argsort(src_lengths + tgt_lengths, kind='stable')
  buckets = []
  for ids in np.array_split(order, min(num_buckets, len(order))):
    src_len = min(_round_up(int(src_lengths[ids].max()), _ROUND), src_cap)
    tgt_len = min(_round_up(int(tgt_lengths[ids].max()), _ROUND), tgt_cap)
    size = batch_size
    if batch_tokens:
      size = max(multiple, batch_tokens // tgt_len // multiple * multiple)
    if size % multiple:
      raise ValueError(f'A batch of {size} examples must be a multiple of {multiple} (devices x accumulation).')
    buckets.append(Bucket(np.sort(ids), src_len, tgt_len, size))
  return buckets


class BucketedBatches:
  """Random access to padded global batches: element i is batch i of the endless, epoch-wise shuffled stream."""

  def __init__(self, src_ids: list[np.ndarray], tgt_ids: list[np.ndarray], buckets: list[Bucket], seed: int):
    self._src, self._tgt, self._buckets, self._seed = src_ids, tgt_ids, buckets, seed
    self.batches_per_epoch = sum(-(-len(b.example_ids) // b.batch_size) for b in buckets)

  def __len__(self) -> int:
    return self.batches_per_epoch * _EPOCHS

  @functools.lru_cache(maxsize=2)
  def _epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    """(bucket index, example ids) of every batch of an epoch, in training order."""
    rng = np.random.default_rng([self._seed, epoch])
    plan = []
    for b, bucket in enumerate(self._buckets):
      ids = rng.permutation(bucket.example_ids)
      plan += [(b, ids[i:i + bucket.batch_size]) for i in range(0, len(ids), bucket.batch_size)]
    return [plan[i] for i in rng.permutation(len(plan))]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    epoch, i = divmod(index, self.batches_per_epoch)
    b, ids = self._epoch_plan(epoch)[i]
    bucket = self._buckets[b]
    first = self._src[0]  # token ids [S] or feature frames [S, F]
    inputs = np.full((bucket.batch_size, bucket.src_len) + first.shape[1:], PAD_ID, first.dtype)
    mask = np.zeros((bucket.batch_size, bucket.src_len), np.int32)
    targets = np.full((bucket.batch_size, bucket.tgt_len), PAD_ID, np.int32)
    for row, example in enumerate(ids):
      src, tgt = self._src[example], self._tgt[example]
      inputs[row, :len(src)], mask[row, :len(src)], targets[row, :len(tgt)] = src, 1, tgt
    return {'inputs': inputs, 'inputs_mask': mask, 'targets': targets}


def padding_fraction(buckets: list[Bucket], src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> dict[str, float]:
  """Padded share of the source and target positions of one epoch of bucketed batches (filler rows included)."""
  out = {}
  for side, lengths, attr in (('source', src_lengths, 'src_len'), ('target', tgt_lengths, 'tgt_len')):
    padded = sum(-(-len(b.example_ids) // b.batch_size) * b.batch_size * getattr(b, attr) for b in buckets)
    out[side] = round(1.0 - float(lengths.sum()) / max(1, padded), 4)
  return out
