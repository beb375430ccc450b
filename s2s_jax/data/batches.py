"""From prepared splits to padded batches (through `inputs.collate`, the one padding of examples into a batch, used
by training, evaluation and inference): the endless, checkpointable training iterator (one padded shape, or the
bucket plan's shapes) and the evaluation batches. Every batch is a dict of numpy arrays (see pipeline.py).
"""

from collections.abc import Iterator
import functools

from absl import logging
import grain
import numpy as np

from s2s_jax import resources
from s2s_jax.data import bucketing
from s2s_jax.data import inputs
from s2s_jax.data.pipeline import Batch
from s2s_jax.data.pipeline import PreparedData
from s2s_jax.data.pipeline import Split

_EPOCHS = 1_000_000  # the bucketed source is "endless": this many epochs


class _Batch:
  """Indices -> the padded batch of those examples of a split (a picklable grain map for worker processes)."""

  def __init__(self, split: Split, src_len: int, tgt_len: int):
    self._split, self._src_len, self._tgt_len = split, src_len, tgt_len

  def __call__(self, indices: np.ndarray) -> Batch:
    sources, targets = zip(*self._split.pairs(indices))
    return inputs.collate(sources, len(indices), self._src_len, targets, self._tgt_len)


class BucketedBatches:
  """Random access to padded batches: element i is batch i of the endless, epoch-wise shuffled stream of the bucket
  plan (bucketing.epoch_plan), so grain's iterator state (an index) makes resumption exact.

  `examples` gives the (source, target) ids of a list of example indices (`pipeline.Split.pairs`). With
  process_count > 1 an element is this process's rows of global batch i (rows process_index, process_index +
  process_count, ...), and only those examples are read.
  """

  def __init__(
    self, examples, buckets: list[bucketing.Bucket], seed: int, process_index: int = 0, process_count: int = 1
  ):
    self._examples, self._buckets, self._seed = examples, buckets, seed
    self._process_index, self._process_count = process_index, process_count
    for bucket in buckets:
      if bucket.batch_size % process_count:
        raise ValueError(f'A batch of {bucket.batch_size} examples does not split over {process_count} processes.')
    self.batches_per_epoch = sum(bucketing.batches_per_bucket(buckets))

  def __len__(self) -> int:
    return self.batches_per_epoch * _EPOCHS

  @functools.lru_cache(maxsize=2)  # noqa: B019  (two epochs' plans; the iterator lives as long as its run)
  def _epoch_plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
    return bucketing.epoch_plan(self._buckets, self._seed, epoch)

  def __getitem__(self, index: int) -> Batch:
    epoch, i = divmod(index, self.batches_per_epoch)
    b, ids = self._epoch_plan(epoch)[i]
    bucket = self._buckets[b]
    pairs = self._examples.pairs(ids[self._process_index :: self._process_count])
    sources, targets = zip(*pairs) if pairs else ((), ())
    like = None if pairs else self._examples.pairs([0])[0][0]  # an empty share: token ids [S] or frames [S, F]
    rows = bucket.batch_size // self._process_count
    return inputs.collate(sources, rows, bucket.src_len, targets, bucket.tgt_len, like)


def train_iterator(
  data: PreparedData, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1, num_workers: int = 0
) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's share of each global batch, reshuffled every epoch.

  Without buckets: one padded shape, examples shuffled over the whole split. With `data.buckets`: batches of the
  bucket plan (s2s_jax/data/bucketing.py), each process taking every process_count-th row of a global batch. Either
  way a process reads only the examples of its own rows. `num_workers` > 0 makes batches in that many grain worker
  processes; grain then reads its absl flags, which the process's entry point parses (app.run; a script without
  it calls `flags.FLAGS.mark_as_parsed()` first, as tests/conftest.py does): this library reads no flags.
  """
  if batch_size % process_count:
    raise ValueError(f'data.batch_size={batch_size} must be a multiple of the process count {process_count}.')
  split = data.splits['train']
  if data.buckets:
    ds = grain.MapDataset.source(BucketedBatches(split, data.buckets, seed, process_index, process_count))
  else:  # shuffled example indices, batched, then one read per batch
    ds = grain.MapDataset.range(len(split)).shuffle(seed=seed).repeat()
    ds = ds[process_index::process_count].batch(batch_size // process_count, drop_remainder=True)
    ds = ds.map(_Batch(split, data.src_len, data.tgt_len))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4))
  if num_workers:  # batches made in worker processes (data.num_workers); the iterator state stays exact
    if num_workers > (usable := resources.usable_cpus()):  # the count is part of the iterator state: kept, not cut
      logging.warning(
        'data.num_workers=%d grain workers, but this process may use %d CPU(s) (affinity, SLURM_CPUS_PER_TASK, '
        'cgroup quota): they will share them. Ask the scheduler for more CPUs or start a new run with fewer workers.',
        num_workers,
        usable,
      )
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def eval_batches(
  data: PreparedData, split: str, batch_size: int, limit: int | None = None
) -> Iterator[tuple[Batch, int]]:
  """Batches of a split in order; the last one is padded with empty rows. Yields (batch, number of real rows)."""
  examples = data.splits[split]
  n = len(examples) if limit is None else min(limit, len(examples))
  for start in range(0, n, batch_size):
    sources, targets = zip(*examples.pairs(range(start, min(n, start + batch_size))))
    yield inputs.collate(sources, batch_size, data.src_len, targets, data.tgt_len), len(sources)
