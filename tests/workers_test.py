"""The data workers (s2s_jax/data/workers.py): a pool of fresh interpreters that runs module-level functions on
chunks, in order, and the vocabulary counting that runs in it (the same vocabularies as counting here)."""

import collections
import pickle
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized

from s2s_jax import config_lib
from s2s_jax.data import pipeline
from s2s_jax.data import registry
from s2s_jax.data import vocab as vocab_lib
from s2s_jax.data import workers


def _small_pool():
  """A pool that uses 2 workers for any map of at least 10 items, in chunks of 7."""
  return mock.patch.multiple(workers, PARALLEL_FROM=10, CHUNK=7)


class PoolTest(absltest.TestCase):
  def test_map_in_workers_equals_map_here_in_order(self):
    items = [f'item {i}' for i in range(100)]
    here = list(workers.Pool(2).map(vocab_lib.count_tokens, items[:9], 'word'))  # below PARALLEL_FROM: here
    with _small_pool(), workers.Pool(2) as pool:
      chunks = list(pool.map(vocab_lib.count_tokens, items, 'word'))
      self.assertLen(pool._procs, 2)  # pylint: disable=protected-access
      again = list(pool.map(len, items))  # a builtin's module is importable too; the same workers, a new task
      self.assertLen(pool._procs, 2)  # pylint: disable=protected-access
    self.assertEqual(pool._procs, [])  # pylint: disable=protected-access
    self.assertLen(chunks, 15)  # ceil(100 / 7), in order:
    self.assertEqual(chunks[0], collections.Counter(' '.join(items[:7]).split()))
    self.assertEqual(chunks[-1], collections.Counter(' '.join(items[98:]).split()))
    self.assertEqual(here, [collections.Counter(' '.join(items[:9]).split())])
    self.assertEqual(again, [7] * 14 + [2])

  def test_an_error_in_a_worker_is_raised_here_and_the_workers_are_ended(self):
    items = [f'item {i}' for i in range(30)]
    with _small_pool(), workers.Pool(2) as pool:
      error = r"count_tokens failed in a data worker:(.|\n)*Unknown tokenizer 'chunk'"
      with self.assertRaisesRegex(workers.WorkerError, error):
        list(pool.map(vocab_lib.count_tokens, items, 'chunk'))  # no such tokenizer
      self.assertEqual(pool._procs, [])  # pylint: disable=protected-access
      # The pool starts new workers for the next map.
      self.assertLen(list(pool.map(len, items)), 5)

  def test_a_worker_that_died_is_named_with_what_to_do(self):
    error = r'Data worker 2 of 2 \(pid {}\) was killed by SIGKILL .* during a map of len; .*run the command again'
    with _small_pool(), workers.Pool(2) as pool:
      self.assertLen(list(pool.map(len, list(range(30)))), 5)
      dead = pool._procs[1]  # pylint: disable=protected-access
      dead.kill()  # between two maps (the out-of-memory killer, say): its next chunk cannot be sent
      dead.wait()
      with self.assertRaisesRegex(workers.WorkerError, error.format(dead.pid)):
        list(pool.map(len, list(range(30))))
      self.assertEqual(pool._procs, [])  # pylint: disable=protected-access
      self.assertLen(list(pool.map(len, list(range(30)))), 5)  # new workers
      results = pool.map(len, list(range(60)))
      self.assertEqual(next(results), 7)
      dead = pool._procs[1]  # pylint: disable=protected-access
      dead.kill()  # in the middle of a map
      dead.wait()
      with self.assertRaisesRegex(workers.WorkerError, error.format(dead.pid)):
        list(results)

  def test_a_caller_that_stops_early_ends_the_workers(self):
    with _small_pool(), workers.Pool(2) as pool:
      results = pool.map(len, list(range(50)))
      self.assertEqual(next(results), 7)
      procs = list(pool._procs)  # pylint: disable=protected-access
      results.close()
      self.assertEqual(pool._procs, [])  # pylint: disable=protected-access
      self.assertTrue(all(p.poll() is not None for p in procs))

  def test_a_function_of_the_main_script_is_refused(self):
    def local(chunk):
      return chunk

    local.__module__ = '__main__'
    with _small_pool(), self.assertRaisesRegex(ValueError, 'importable module'):
      list(workers.Pool(2).map(local, list(range(20))))

  def test_vocabularies_pickle_as_their_saved_form(self):
    texts = ['a b c', 'a b', 'x y z a']
    for vocab in (
      vocab_lib.build(texts, 'word'),
      vocab_lib.build(texts, 'moses', lang='de', lowercase=True),
      vocab_lib.build(texts * 30, 'sentencepiece', max_size=12),
    ):
      again = pickle.loads(pickle.dumps(vocab))
      self.assertEqual(type(again), type(vocab))
      self.assertEqual(again.sha256(), vocab.sha256())
      self.assertEqual(again.encode('a b q'), vocab.encode('a b q'))


_TEXTS = [
  ('Ein Hund läuft.', 'A dog runs.'),
  ('Zwei Hunde, drei Katzen!', 'Two dogs, three cats!'),
  ('Der Mann isst einen Apfel.', 'The man eats an apple.'),
  ('&lt; </s> Ünïcödé', 'UNICODE <unk> words'),
]


class ParallelCountingTest(parameterized.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.pool = workers.Pool(2)  # started by the first case, reused by the others

  @classmethod
  def tearDownClass(cls):
    cls.pool.close()
    super().tearDownClass()

  @parameterized.product(
    tokenizer=['char', 'word', 'moses'], lowercase=[False, True], shared_vocab=[False, True], min_count=[1, 3]
  )
  def test_counting_in_workers_builds_the_same_vocabularies(self, tokenizer, lowercase, shared_vocab, min_count):
    c = config_lib.base_config().data
    c.update(
      name='parallel_text',
      tokenizer=tokenizer,
      lowercase=lowercase,
      shared_vocab=shared_vocab,
      vocab_min_count=min_count,
      max_vocab_size=40,
      source_lang='de',
      target_lang='en',
    )
    pairs = [(f'{s} {i % 13}', f'{t} {i % 7}') for i in range(60) for s, t in _TEXTS[i % 4 : i % 4 + 1]]
    here = pipeline.build_vocabs(registry.get(c.name), pairs, c)
    with _small_pool():
      there = pipeline.build_vocabs(registry.get(c.name), pairs, c, self.pool)
    self.assertLen(self.pool._procs, 2)  # pylint: disable=protected-access
    for a, b in zip(here, there):
      self.assertEqual(a.to_json(), b.to_json())
    if shared_vocab:
      self.assertIs(there[0], there[1])


if __name__ == '__main__':
  absltest.main()
