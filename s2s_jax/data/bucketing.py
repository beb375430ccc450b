"""Length-bucketed training batches with little padding: the plan (batches.BucketedBatches makes its batches).

The plan has two parts.

Shapes. Every training example is padded to one of K batch shapes (S_k, T_k): the cheapest one that holds its
source and target, where a shape costs S / (mean source length) + T / (mean target length), so each side's padding
counts relative to its length. The shapes are chosen greedily to keep that cost low: starting from every distinct
(source, target) length pair (lengths above 32 rounded up to a 3% grid, which bounds the start for long audio
inputs), the shape whose examples cost least to move to their next-cheapest shape is dropped, again and again; the
longest shape (the split's longest source, its longest target) is never dropped, so every example fits one.
`num_buckets=K` keeps K shapes; `num_buckets=0` the fewest (at most 64) whose epoch of batches keeps the padded
share of the source and of the target positions at or below `max_padding` each. Each shape is one compile of the
train step (compiled lazily, when its first batch arrives).

Batches. A shape's batch holds `batch_size` examples, or with `batch_tokens` about that many padded target tokens
(`batch_tokens // T_k`, rounded down to `multiple` = devices x accumulation steps). Each epoch shuffles every shape's
examples (seeded by seed and epoch) and cuts them into full batches; the examples left over (fewer than a batch) join
the next-cheapest shape that holds theirs, so only the longest shape ends the epoch with a partial batch, which is
filled with empty rows (mask 0, target PAD: no loss). Every example is seen exactly once per epoch, the number of
batches per epoch is fixed, and the order of all batches is shuffled (`epoch_plan`).
"""

import dataclasses

from absl import logging
import numpy as np

_EXACT_UP_TO = 32  # lengths up to this are shape candidates as they are; longer ones are rounded up to a 3% grid
_GRID_RATIO = 1.03
_ONE_BY_ONE_BELOW = 64  # above this many shapes, drop the cheapest 5% at once (fast for long audio inputs)
_MAX_AUTO_SHAPES = 64  # num_buckets=0 never picks more shapes (compiles) than this
_INDEX = np.int32  # example indices (4 bytes per example: the plan of a 10M-pair corpus holds 40 MB per epoch)


@dataclasses.dataclass(frozen=True)
class Bucket:
  example_ids: np.ndarray  # indices into the split of the examples whose cheapest shape this is
  src_len: int  # the padded shape of this bucket's batches
  tgt_len: int
  batch_size: int
  parent: int | None  # the bucket its leftover examples join (the next-cheapest shape that holds this one); None: last


def _grid(lengths: np.ndarray) -> np.ndarray:
  """Lengths above _EXACT_UP_TO rounded up to the next point of a geometric grid (ratio _GRID_RATIO)."""
  points = [_EXACT_UP_TO]
  while points[-1] < lengths.max(initial=0):
    points.append(max(points[-1] + 1, int(np.ceil(points[-1] * _GRID_RATIO))))
  points = np.minimum(np.asarray(points), lengths.max(initial=0))  # never beyond the longest
  return np.where(
    lengths <= _EXACT_UP_TO, lengths, points[np.minimum(np.searchsorted(points, lengths), len(points) - 1)]
  )


def _assign(pairs: np.ndarray, shapes: np.ndarray, side_cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """For each length pair [P, 2]: the index of its cheapest holding shape, that cost and its second-cheapest cost
  (a shape costs side_cost . (S, T))."""
  holds = (shapes[None, :, 0] >= pairs[:, None, 0]) & (shapes[None, :, 1] >= pairs[:, None, 1])
  cost = np.where(holds, (shapes @ side_cost)[None, :], np.inf)
  two = np.partition(cost, 1, axis=1)[:, :2] if len(shapes) > 1 else np.repeat(cost, 2, axis=1)
  return cost.argmin(1), two[:, 0], two[:, 1]


def _drop_order(pairs: np.ndarray, weights: np.ndarray, shapes: np.ndarray, side_cost: np.ndarray) -> list[int]:
  """The order in which the greedy drops `shapes` (indices), cheapest move first, down to the last shape kept: the
  longest (the last row of `shapes`)."""
  alive = np.ones(len(shapes), bool)
  order = []
  while alive.sum() > 1:
    idx = np.flatnonzero(alive)
    best, first, second = _assign(pairs, shapes[idx], side_cost)
    extra = np.bincount(best, weights=weights * np.minimum(second - first, 1e30), minlength=len(idx))
    extra[np.bincount(best, minlength=len(idx)) == 0] = -1  # shapes no example needs go first
    extra[idx == len(shapes) - 1] = np.inf
    count = 1 if len(idx) <= _ONE_BY_ONE_BELOW else len(idx) // 20
    drop = idx[np.argsort(extra, kind='stable')[:count]]
    order += drop.tolist()
    alive[drop] = False
  return order


class _Candidates:
  """The training split's distinct length pairs and the greedy's candidate shapes, for any number of shapes."""

  def __init__(self, src_lengths: np.ndarray, tgt_lengths: np.ndarray):
    lengths = np.stack([src_lengths, tgt_lengths], axis=1).astype(np.int64)
    self.pairs, inverse, self.weights = np.unique(lengths, axis=0, return_inverse=True, return_counts=True)
    self.inverse = inverse.reshape(-1)
    longest = self.pairs.max(axis=0, keepdims=True)
    grid = np.unique(np.stack([_grid(self.pairs[:, 0]), _grid(self.pairs[:, 1])], axis=1), axis=0)
    self.shapes = np.concatenate([grid[np.any(grid != longest, axis=1)], longest])  # the longest last
    # A padded position costs in proportion to its side's share: each side's padding counts relative to its length.
    self.side_cost = 1.0 / np.maximum(1.0, (self.pairs * self.weights[:, None]).sum(0) / self.weights.sum())
    self.order = _drop_order(self.pairs, self.weights, self.shapes, self.side_cost)

  def __len__(self) -> int:
    return len(self.shapes)

  def shapes_for(self, k: int) -> np.ndarray:
    """The k shapes the greedy keeps, cheapest (S + T) first."""
    kept = np.delete(self.shapes, self.order[: len(self.shapes) - k], axis=0)
    return kept[np.lexsort((kept[:, 1], kept[:, 0], kept @ self.side_cost))]

  def owners(self, shapes: np.ndarray) -> np.ndarray:
    """The index of each length pair's cheapest holding shape."""
    return _assign(self.pairs, shapes, self.side_cost)[0]


def _batch_sizes(shapes: np.ndarray, batch_size: int, batch_tokens: int, multiple: int) -> list[int]:
  sizes = [
    max(multiple, batch_tokens // int(t) // multiple * multiple) if batch_tokens else batch_size for t in shapes[:, 1]
  ]
  for size in sizes:
    if size % multiple:
      raise ValueError(f'A batch of {size} examples must be a multiple of {multiple} (devices x accumulation).')
  return sizes


def _parents(shapes: np.ndarray) -> list[int | None]:
  """For each shape (cheapest first), the next-cheapest shape that holds it; None for the last (the longest)."""
  out = []
  for k, (s, t) in enumerate(shapes.tolist()):
    holders = [j for j in range(k + 1, len(shapes)) if shapes[j, 0] >= s and shapes[j, 1] >= t]
    out.append(holders[0] if holders else None)
  return out


def make_buckets(
  src_lengths: np.ndarray,
  tgt_lengths: np.ndarray,
  *,
  num_buckets: int,
  max_padding: float,
  batch_size: int,
  batch_tokens: int,
  multiple: int,
) -> list[Bucket]:
  """The plan's buckets (see the module docstring), cheapest shape first.

  `num_buckets > 0`: that many shapes (fewer when the split has fewer candidates); 0: the fewest whose epoch of
  batches (partial batch and leftovers moved to longer shapes included) pads at most `max_padding` of the source
  and of the target positions, or all candidates when none does.
  """
  cand = _Candidates(np.asarray(src_lengths), np.asarray(tgt_lengths))
  lengths = (cand.pairs[:, 0] * cand.weights).sum(), (cand.pairs[:, 1] * cand.weights).sum()

  def plan(k: int):
    shapes = cand.shapes_for(k)
    owner = cand.owners(shapes)
    return shapes, owner, _batch_sizes(shapes, batch_size, batch_tokens, multiple), _parents(shapes)

  def padding(shapes, owner, sizes, parents) -> float:
    counts = np.bincount(owner, weights=cand.weights, minlength=len(shapes)).astype(np.int64)
    batches = _batches(counts.tolist(), sizes, parents)
    padded = [sum(n * b * x for n, b, x in zip(batches, sizes, shapes[:, side])) for side in (0, 1)]
    return max(1.0 - real / max(1, pad) for real, pad in zip(lengths, padded))

  if num_buckets:
    shapes, owner, sizes, parents = plan(min(num_buckets, len(cand)))
  else:
    best = None
    for k in range(1, min(len(cand), _MAX_AUTO_SHAPES) + 1):
      candidate = plan(k)
      value = padding(*candidate)
      if best is None or value < best[0]:
        best = (value, candidate)
      if value <= max_padding:
        break
    else:
      logging.warning(
        'No plan of at most %d batch shapes pads at most data.max_padding=%s of the training '
        'positions; using %d shapes (%.3f padded).',
        _MAX_AUTO_SHAPES,
        max_padding,
        len(best[1][0]),
        best[0],
      )
    shapes, owner, sizes, parents = best[1]
  example_owner = owner[cand.inverse]
  return [
    Bucket(np.flatnonzero(example_owner == k).astype(_INDEX), int(s), int(t), size, parent)
    for k, ((s, t), size, parent) in enumerate(zip(shapes.tolist(), sizes, parents))
  ]


def _batches(counts: list[int], sizes: list[int], parents: list[int | None]) -> list[int]:
  """Batches of each bucket in an epoch, from its example count: full batches, leftovers moved to the parent."""
  carried = [0] * len(counts)
  out = []
  for k, (n, size, parent) in enumerate(zip(counts, sizes, parents)):
    n += carried[k]
    if parent is None:
      out.append(-(-n // size))
    else:
      out.append(n // size)
      carried[parent] += n % size
  return out


def batches_per_bucket(buckets: list[Bucket]) -> list[int]:
  """Batches of each bucket in every epoch (fixed: leftover counts do not depend on the shuffle)."""
  return _batches([len(b.example_ids) for b in buckets], [b.batch_size for b in buckets], [b.parent for b in buckets])


def epoch_plan(buckets: list[Bucket], seed: int, epoch: int) -> list[tuple[int, np.ndarray]]:
  """(bucket index, example ids) of every global batch of an epoch, in training order (see the module docstring)."""
  rng = np.random.default_rng([seed, epoch])
  carried = [[] for _ in buckets]
  plan = []
  for k, bucket in enumerate(buckets):
    ids = rng.permutation(np.concatenate([bucket.example_ids, *carried[k]]).astype(_INDEX))
    size = bucket.batch_size
    full = len(ids) if bucket.parent is None else len(ids) // size * size
    plan += [(k, ids[i : i + size]) for i in range(0, full, size)]
    if full < len(ids):
      carried[bucket.parent].append(ids[full:])
  return [plan[i] for i in rng.permutation(len(plan))]


def padding_fraction(buckets: list[Bucket], src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> dict[str, float]:
  """Padded share of the source and target positions of an epoch of bucketed batches (the same in every epoch;
  the empty rows of the partial batch included)."""
  counts = batches_per_bucket(buckets)
  out = {}
  for side, lengths, attr in (('source', src_lengths, 'src_len'), ('target', tgt_lengths, 'tgt_len')):
    padded = sum(n * b.batch_size * getattr(b, attr) for n, b in zip(counts, buckets))
    out[side] = round(1.0 - float(lengths.sum()) / max(1, padded), 4)
  return out


def plan(data_config, train_lengths: np.ndarray, multiple: int, report: dict) -> list[Bucket] | None:
  """The bucket plan of the training split (data.num_buckets / batch_tokens; None for one padded shape) from its
  lengths [N, 2], with its shapes, batches and padding added to the data report."""
  if data_config.num_buckets == 1 and not data_config.batch_tokens:
    return None
  lengths = (train_lengths[:, 0], train_lengths[:, 1])
  buckets = make_buckets(
    *lengths,
    num_buckets=data_config.num_buckets,
    max_padding=data_config.max_padding,
    batch_size=data_config.batch_size,
    batch_tokens=data_config.batch_tokens,
    multiple=multiple,
  )
  report['splits']['train']['padding_fraction'] = padding_fraction(buckets, *lengths)
  counts = batches_per_bucket(buckets)
  report['train_buckets'] = [
    {
      'examples': len(b.example_ids),
      'src_len': b.src_len,
      'tgt_len': b.tgt_len,
      'batch_size': b.batch_size,
      'batches_per_epoch': n,
    }
    for b, n in zip(buckets, counts)
  ]
  report['train_batch_shapes'] = len(buckets)
  report['train_batches_per_epoch'] = sum(counts)
  logging.info(
    'Training batches: %d shapes, %d batches per epoch, padding %s',
    len(buckets),
    sum(counts),
    report['splits']['train']['padding_fraction'],
  )
  return buckets
