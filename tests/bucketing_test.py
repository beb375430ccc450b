"""Tests of length bucketing and token-based batching of the training split."""
import collections

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
import numpy as np

from s2s_jax.data import EOS_ID
from s2s_jax.data import bucketing
from s2s_jax.data import pipeline


def _split(n, seed=0, max_src=40, max_tgt=30):
  """Example i has source ids [i + 4, ..., EOS] so every row says which example it is."""
  rng = np.random.RandomState(seed)
  src = [np.array([i + 4] * int(rng.randint(1, max_src)) + [EOS_ID], np.int32) for i in range(n)]
  tgt = [np.array([5] * int(rng.randint(1, max_tgt)) + [EOS_ID], np.int32) for i in range(n)]
  return src, tgt


def _ids_of(batch):
  rows = batch['inputs'][batch['inputs_mask'].sum(1) > 0]
  return [int(r[0]) - 4 for r in rows]


def _buckets(src, tgt, **kw):
  args = dict(num_buckets=4, batch_size=8, batch_tokens=0, multiple=1, src_cap=64, tgt_cap=64)
  args.update(kw)
  return bucketing.make_buckets(np.array([len(x) for x in src]), np.array([len(x) for x in tgt]), **args)


class BucketingTest(parameterized.TestCase):

  @given(n=st.integers(1, 120), num_buckets=st.integers(1, 6), batch_size=st.sampled_from([1, 4, 8, 16]),
         batch_tokens=st.sampled_from([0, 64, 200]), seed=st.integers(0, 5))
  def test_every_example_exactly_once_per_epoch(self, n, num_buckets, batch_size, batch_tokens, seed):
    src, tgt = _split(n, seed)
    buckets = _buckets(src, tgt, num_buckets=num_buckets, batch_size=batch_size, batch_tokens=batch_tokens,
                       multiple=4 if batch_tokens else 1)
    source = bucketing.BucketedBatches(src, tgt, buckets, seed)
    for epoch in range(2):
      seen = []
      for i in range(epoch * source.batches_per_epoch, (epoch + 1) * source.batches_per_epoch):
        batch = source[i]
        seen += _ids_of(batch)
        # Every row fits its bucket's shape, and the shape is one of the buckets'.
        self.assertIn((batch['inputs'].shape[1], batch['targets'].shape[1], batch['inputs'].shape[0]),
                      {(b.src_len, b.tgt_len, b.batch_size) for b in buckets})
      self.assertEqual(sorted(seen), list(range(n)))

  def test_shapes_fit_the_examples_and_round_to_8(self):
    src, tgt = _split(200)
    buckets = _buckets(src, tgt, num_buckets=4)
    self.assertLen(buckets, 4)
    for b in buckets:
      self.assertEqual(b.src_len % 8, 0)
      self.assertGreaterEqual(b.src_len, max(len(src[i]) for i in b.example_ids))
      self.assertLess(b.src_len - 8, max(len(src[i]) for i in b.example_ids))
    self.assertEqual(sorted(np.concatenate([b.example_ids for b in buckets]).tolist()), list(range(200)))
    self.assertLess(buckets[0].src_len, buckets[-1].src_len)  # short examples are batched together

  def test_token_batches_hold_about_batch_tokens(self):
    src, _ = _split(200)
    tgt = [x[:len(x) // 2 + 1] for x in src]  # target lengths follow the source lengths, as in translation
    buckets = _buckets(src, tgt, num_buckets=3, batch_tokens=256, multiple=4)
    for b in buckets:
      self.assertEqual(b.batch_size % 4, 0)
      self.assertLessEqual(b.batch_size * b.tgt_len, 256 + 4 * b.tgt_len)
    self.assertGreater(buckets[0].batch_size, buckets[-1].batch_size)

  def test_seeded_and_reshuffled_every_epoch(self):
    src, tgt = _split(100)
    buckets = _buckets(src, tgt)
    a = bucketing.BucketedBatches(src, tgt, buckets, seed=1)
    b = bucketing.BucketedBatches(src, tgt, buckets, seed=1)
    c = bucketing.BucketedBatches(src, tgt, buckets, seed=2)
    first = [_ids_of(a[i]) for i in range(a.batches_per_epoch)]
    self.assertEqual(first, [_ids_of(b[i]) for i in range(b.batches_per_epoch)])
    self.assertNotEqual(first, [_ids_of(c[i]) for i in range(c.batches_per_epoch)])
    second = [_ids_of(a[i]) for i in range(a.batches_per_epoch, 2 * a.batches_per_epoch)]
    self.assertNotEqual(first, second)

  def test_padding_fraction(self):
    src, tgt = _split(50)
    buckets = _buckets(src, tgt, num_buckets=2, batch_size=8)
    lengths = np.array([len(x) for x in src]), np.array([len(x) for x in tgt])
    source = bucketing.BucketedBatches(src, tgt, buckets, 0)
    batches = [source[i] for i in range(source.batches_per_epoch)]
    real = sum(int(b['inputs_mask'].sum()) for b in batches)
    padded = sum(b['inputs'].size for b in batches)
    self.assertAlmostEqual(bucketing.padding_fraction(buckets, *lengths)['source'], 1 - real / padded, places=3)


class IteratorTest(absltest.TestCase):

  def _data(self, n=64):
    src, tgt = _split(n)
    split = pipeline.Split('train', [''] * n, [''] * n, src, tgt)
    buckets = _buckets(src, tgt, num_buckets=3, batch_size=8, multiple=2)
    return pipeline.TextData(None, None, {'train': split}, 64, 64, {}, buckets)

  def test_resume_from_the_iterator_state_gives_the_same_batches(self):
    data = self._data()
    it = pipeline.train_iterator(data, 8, seed=3)
    for _ in range(5):  # mid-epoch (8 or 9 batches per epoch)
      next(it)
    state = it.get_state()
    expected = [_ids_of(next(it)) for _ in range(12)]  # crosses into the next epoch
    again = pipeline.train_iterator(data, 8, seed=3)
    again.set_state(state)
    self.assertEqual([_ids_of(next(again)) for _ in range(12)], expected)

  def test_processes_split_each_global_batch(self):
    data = self._data()
    whole = pipeline.train_iterator(data, 8, seed=0)
    parts = [pipeline.train_iterator(data, 8, seed=0, process_index=p, process_count=2) for p in range(2)]
    for _ in range(10):
      batch = next(whole)
      halves = [next(p) for p in parts]
      self.assertEqual(collections.Counter(_ids_of(halves[0]) + _ids_of(halves[1])),
                       collections.Counter(_ids_of(batch)))
      self.assertEqual(halves[0]['inputs'].shape[0], 4)


if __name__ == '__main__':
  absltest.main()
