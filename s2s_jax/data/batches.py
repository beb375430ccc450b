"""From prepared splits to padded batches: the endless, checkpointable training iterator (one padded shape, or the
bucket plan's shapes) and the evaluation batches. Every batch is a dict of numpy arrays (see pipeline.py).
"""

from collections.abc import Iterator

from absl import flags
from absl import logging
import grain
import numpy as np

from s2s_jax import resources
from s2s_jax.data import PAD_ID
from s2s_jax.data import bucketing
from s2s_jax.data.pipeline import Batch, Split, PreparedData


def _pad(ids: np.ndarray, length: int) -> np.ndarray:
  """Token ids padded with PAD, or feature frames [frames, F] padded with zero frames, to `length` steps."""
  out = np.full((length,) + ids.shape[1:], PAD_ID, ids.dtype)
  out[: len(ids)] = ids
  return out


class _Examples:
  """Random access to padded examples of a split: a grain data source."""

  def __init__(self, split: Split, src_len: int, tgt_len: int):
    self._split, self._src_len, self._tgt_len = split, src_len, tgt_len

  def __len__(self) -> int:
    return len(self._split)

  def __getitem__(self, i: int) -> Batch:
    return self._example(*self._split.pairs([i])[0])

  def rows(self, indices) -> list[Batch]:
    """Examples `indices`, read in one go."""
    return [self._example(src, tgt) for src, tgt in self._split.pairs(indices)]

  def _example(self, src: np.ndarray, tgt: np.ndarray) -> Batch:
    return {
      'inputs': _pad(src, self._src_len),
      'inputs_mask': (np.arange(self._src_len) < len(src)).astype(np.int32),
      'targets': _pad(tgt, self._tgt_len),
    }


class _Batch:
  """Indices -> the padded batch of those examples (a picklable grain map for worker processes)."""

  def __init__(self, examples: _Examples):
    self._examples = examples

  def __call__(self, indices: np.ndarray) -> Batch:
    rows = self._examples.rows(indices)
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def train_iterator(
  data: PreparedData, batch_size: int, seed: int, process_index: int = 0, process_count: int = 1, num_workers: int = 0
) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's share of each global batch, reshuffled every epoch.

  Without buckets: one padded shape, examples shuffled over the whole split. With `data.buckets`: batches of the
  bucket plan (s2s_jax/data/bucketing.py), each process taking every process_count-th row of a global batch. Either
  way a process reads only the examples of its own rows. `num_workers` > 0 makes batches in that many grain worker
  processes.
  """
  if batch_size % process_count:
    raise ValueError(f'data.batch_size={batch_size} must be a multiple of the process count {process_count}.')
  split = data.splits['train']
  if data.buckets:
    ds = grain.MapDataset.source(bucketing.BucketedBatches(split, data.buckets, seed, process_index, process_count))
  else:  # shuffled example indices, batched, then one read per batch
    ds = grain.MapDataset.range(len(split)).shuffle(seed=seed).repeat()
    ds = ds[process_index::process_count].batch(batch_size // process_count, drop_remainder=True)
    ds = ds.map(_Batch(_Examples(split, data.src_len, data.tgt_len)))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=4))
  if num_workers:  # batches made in worker processes (data.num_workers); the iterator state stays exact
    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags (parsed by our entry points' app.run)
      flags.FLAGS.mark_as_parsed()
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
  examples = _Examples(data.splits[split], data.src_len, data.tgt_len)
  n = len(examples) if limit is None else min(limit, len(examples))
  for start in range(0, n, batch_size):
    rows = examples.rows(range(start, min(n, start + batch_size)))
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    pad = batch_size - len(rows)
    if pad:
      batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
    yield batch, len(rows)
