"""The id cache (s2s_jax/data/id_cache.py): text datasets are encoded once and then read by random access.

Real files throughout: a small parallel corpus written as TSV in a temp dir, prepared by the project's TFDS builder
into a temp data_dir. "Reads no raw text" is checked by making the registry's loader (the only reader of raw text)
raise on a second start.
"""

import dataclasses
import glob
import json
import os
import pickle
from unittest import mock

from absl.testing import absltest
import numpy as np
import testutil

from s2s_jax import config_lib
from s2s_jax.data import batches
from s2s_jax.data import id_cache
from s2s_jax.data import pipeline
from s2s_jax.data import registry
from s2s_jax.data import vocab_cache
from s2s_jax.data import workers


def _corpus(folder: str, num_train: int = 300, seed: int = 0) -> str:
  """train / validation / test TSV files of random word sentences (the target a rewrite of the source)."""
  rng = np.random.default_rng(seed)
  words = [f'w{i}' for i in range(200)]
  files = []
  for split, n in (('train', num_train), ('validation', 20), ('test', 20)):
    path = os.path.join(folder, f'{split}.tsv')
    with open(path, 'w', encoding='utf-8') as f:
      for _ in range(n):
        row = [words[min(int(i), 199)] for i in rng.zipf(1.3, rng.integers(1, 30))]
        f.write(f'{" ".join(row)}\t{" ".join(reversed(row))} .\n')
    files.append(f'{split}={path}')
  return ';'.join(files)


def _config(data_dir: str, files: str, **overrides):
  c = config_lib.base_config().data
  c.update(
    name='parallel_text',
    files=files,
    data_dir=data_dir,
    tokenizer='word',
    max_src_len=20,
    max_tgt_len=24,
    num_buckets=0,
    batch_size=16,
  )
  c.update(**overrides)
  pipeline.resolve_paths(c)
  return c


def _no_raw_text():
  return mock.patch.object(registry.Dataset, 'load', side_effect=AssertionError('raw text was read'))


class IdCacheTest(absltest.TestCase):
  def setUp(self):
    super().setUp()
    self.data_dir = self.create_tempdir('data').full_path
    self.files = _corpus(self.create_tempdir('raw').full_path)

  def prepare(self, **overrides) -> pipeline.PreparedData:
    return pipeline.prepare(_config(self.data_dir, self.files, **overrides), self.create_tempdir().full_path)

  def cache_folders(self) -> list[str]:
    return sorted(glob.glob(os.path.join(self.data_dir, id_cache.FOLDER, '*')))

  def assert_same_data(self, a: pipeline.PreparedData, b: pipeline.PreparedData):
    self.assertEqual(a.report, b.report)
    self.assertEqual((a.src_len, a.tgt_len), (b.src_len, b.tgt_len))
    for name in a.splits:
      x, y = a.splits[name], b.splits[name]
      self.assertEqual(list(x.sources), list(y.sources))
      self.assertEqual(list(x.targets), list(y.targets))
      for u, v in zip([*x.src_ids, *x.tgt_ids], [*y.src_ids, *y.tgt_ids]):
        np.testing.assert_array_equal(u, v)

  def test_a_second_start_reads_no_raw_text_and_gets_the_same_data(self):
    first = self.prepare()
    self.assertLen(self.cache_folders(), 1)
    with _no_raw_text():
      second = self.prepare()  # a new workdir: vocabularies from the vocabulary cache, ids from the id cache
    self.assert_same_data(first, second)
    self.assertEqual(first.frontend.sha256(), second.frontend.sha256())
    self.assertLen(self.cache_folders(), 1)
    # Another length policy is another cache (the vocabularies are reused).
    with _no_raw_text(), self.assertRaisesRegex(AssertionError, 'raw text was read'):
      self.prepare(max_src_len=10)

  def test_reading_logs_no_error(self):
    self.prepare()
    with self.assertNoLogs('absl', 'ERROR'):  # array_record's notice on groups of 64 is filtered (id_cache._GROUP)
      data = self.prepare()
      data.splits['validation'].store.pairs([0, 1])
      next(batches.train_iterator(data, 8, seed=0))

  def test_the_cache_gives_the_in_memory_encoding_and_batches(self):
    data = self.prepare(src_len_policy='truncate')
    data_config = _config(self.data_dir, self.files, src_len_policy='truncate')
    raw, _ = registry.get('parallel_text').load(data_config)
    memory = {
      name: pipeline.encode_split(name, pairs, data.frontend, data.tgt_vocab, data_config, name == 'train')
      for name, pairs in raw.items()
    }
    in_memory = dataclasses.replace(data, splits={name: split for name, (split, _) in memory.items()})
    for name, (split, report) in memory.items():
      self.assertIsNone(split.store)
      self.assertIsNotNone(data.splits[name].store)
      self.assertEqual({k: v for k, v in data.report['splits'][name].items() if k != 'padding_fraction'}, report)
    self.assertGreater(data.report['splits']['train']['truncated']['source'], 0)
    self.assert_same_data(data, in_memory)
    for process_count in (1, 2):
      for index in range(process_count):
        its = [
          batches.train_iterator(d, 16, seed=3, process_index=index, process_count=process_count)
          for d in (data, in_memory)
        ]
        for _ in range(25):  # more than an epoch
          a, b = next(its[0]), next(its[1])
          for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    for (a, n), (b, m) in zip(batches.eval_batches(data, 'test', 8), batches.eval_batches(in_memory, 'test', 8)):
      self.assertEqual(n, m)
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])

  def test_worker_processes_give_the_same_batches_and_resume_exactly(self):
    data = self.prepare()
    reference = batches.train_iterator(data, 16, seed=5)
    expected = [next(reference) for _ in range(8)]
    it = batches.train_iterator(data, 16, seed=5, num_workers=2)
    got = [next(it) for _ in range(5)]
    state = it.get_state()
    resumed = batches.train_iterator(data, 16, seed=5, num_workers=2)  # (the state holds one entry per worker)
    resumed.set_state(state)
    got += [next(resumed) for _ in range(3)]
    for a, b in zip(expected, got, strict=True):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])

  def test_each_process_reads_only_its_rows(self):
    data = self.prepare()
    split = data.splits['train']
    global_batches = batches.BucketedBatches(pickle.loads(pickle.dumps(split)), data.buckets, seed=0)
    shards = [
      batches.BucketedBatches(pickle.loads(pickle.dumps(split)), data.buckets, 0, index, 2) for index in range(2)
    ]
    epoch = global_batches.batches_per_epoch
    for i in range(epoch):
      whole = global_batches[i]
      for index, shard in enumerate(shards):
        part = shard[i]
        for k in whole:
          np.testing.assert_array_equal(part[k], whole[k][index::2])
    reads = [shard._examples.store.reads for shard in shards]  # pylint: disable=protected-access
    self.assertEqual(sum(reads), len(split))  # every example read once in the epoch, by one process
    self.assertLess(abs(reads[0] - reads[1]), len(split) // 4)

  def test_damaged_caches_are_rebuilt_with_a_warning(self):
    first = self.prepare()
    (folder,) = self.cache_folders()
    for damage in ('truncate', 'no_commit', 'lengths'):
      if damage == 'truncate':
        with open(os.path.join(folder, 'train.array_record'), 'r+b') as f:
          f.truncate(100)
      elif damage == 'no_commit':
        os.remove(os.path.join(folder, 'COMMIT'))
      else:
        np.save(os.path.join(folder, 'train.lengths.npy'), np.zeros((3, 2), np.int32))
      with self.assertLogs(level='WARNING') as logs:
        again = self.prepare()
      self.assertTrue(any('is damaged' in line for line in logs.output), logs.output)
      self.assert_same_data(first, again)
      self.assertEqual(self.cache_folders(), [folder])
    # A text file damaged in place (same size) is never read: a clear error names the folder and what to do, and
    # the next start builds it again.
    with open(os.path.join(folder, 'test.text.json'), 'r+b') as f:
      f.write(b'[')
    with self.assertRaisesRegex(
      id_cache.DamagedCacheError, rf'test.text.json of the id cache {folder} failed .*Start the run again'
    ):
      list(self.prepare().splits['test'].targets)
    with self.assertLogs(level='WARNING') as logs:
      again = self.prepare()
    self.assertIn('test.text.json does not match its sha256 in COMMIT', '\n'.join(logs.output))
    self.assert_same_data(first, again)

  def test_a_record_file_damaged_in_place_names_the_cache_and_the_next_start_rebuilds_it(self):
    first = self.prepare()
    (folder,) = self.cache_folders()
    with open(os.path.join(folder, 'train.array_record'), 'r+b') as f:  # one byte of the records; the same size
      f.seek(1000)
      byte = f.read(1)
      f.seek(1000)
      f.write(bytes([byte[0] ^ 0xFF]))
    damaged = self.prepare()  # opened without hashing the record files: their sizes match COMMIT
    train = damaged.splits['train']
    with self.assertRaisesRegex(
      Exception, rf'Reading train.array_record of the id cache {folder} failed .*Start the run again'
    ):
      next(batches.train_iterator(damaged, len(train), seed=0))
    with self.assertLogs(level='WARNING') as logs:
      again = self.prepare()
    self.assertIn('train.array_record does not match its sha256 in COMMIT (a read failed', '\n'.join(logs.output))
    self.assert_same_data(first, again)
    self.assertEqual(self.cache_folders(), [folder])
    # A failed read whose files are whole (an I/O error that passed) keeps the cache, with a warning.
    with open(os.path.join(folder, 'DAMAGED'), 'w', encoding='utf-8') as f:
      json.dump({'file': 'train.array_record', 'error': 'Input/output error'}, f)
    with self.assertLogs(level='WARNING') as logs:
      kept = self.prepare()
    self.assertIn('but every file matches its sha256 in COMMIT; using it', '\n'.join(logs.output))
    self.assertFalse(os.path.exists(os.path.join(folder, 'DAMAGED')))
    self.assert_same_data(first, kept)

  def test_another_code_version_builds_a_new_cache(self):
    self.prepare()
    with mock.patch.object(id_cache, 'VERSION', id_cache.VERSION + 1):
      self.prepare()
    self.assertLen(self.cache_folders(), 2)

  def test_parallel_preparation_equals_serial(self):
    serial = self.prepare()
    with (
      mock.patch.object(workers, 'PARALLEL_FROM', 10),
      mock.patch.object(workers, 'CHUNK', 64),
      mock.patch.object(id_cache, 'VERSION', id_cache.VERSION + 1),  # a new cache, encoded by 2 workers
      mock.patch.object(vocab_cache, 'VERSION', vocab_cache.VERSION + 1),  # text read, counted by 2 workers
      mock.patch('os.cpu_count', return_value=2),
      mock.patch.object(workers.Pool, 'map', autospec=True, side_effect=workers.Pool.map) as pool_map,
      mock.patch.object(workers.Pool, '_start', autospec=True, side_effect=workers.Pool._start) as start,
    ):
      parallel = self.prepare()
    self.assertEqual(  # each split read, the training pairs counted, each split encoded
      [call.args[1].__name__ for call in pool_map.call_args_list],
      ['_read_records'] * 3 + ['_count_chunk'] + ['_encode_chunk'] * 3,
    )
    self.assertTrue(start.called)  # (worker processes, not this one)
    self.assertLen(self.cache_folders(), 2)
    self.assertEqual(serial.frontend.tokens, parallel.frontend.tokens)
    self.assertEqual(serial.tgt_vocab.tokens, parallel.tgt_vocab.tokens)
    self.assert_same_data(serial, parallel)

  def test_parallel_encoding_from_a_script_without_a_main_guard(self):
    # The workers are fresh interpreters of s2s_jax.data.workers: a caller's unguarded script is not run again in
    # them (multiprocessing's spawned children would, and would wait forever on the lock their parent holds).
    script = os.path.join(self.create_tempdir().full_path, 'unguarded.py')
    with open(script, 'w', encoding='utf-8') as f:
      f.write(
        'from s2s_jax import config_lib\n'
        'from s2s_jax.data import pipeline, workers\n'
        'workers.PARALLEL_FROM, workers.CHUNK = 10, 64\n'
        'c = config_lib.base_config().data\n'
        f'c.update(name="parallel_text", files={self.files!r}, data_dir={self.data_dir!r}, tokenizer="word")\n'
        'pipeline.resolve_paths(c)\n'
        'print("examples", len(pipeline.prepare(c).splits["train"]))\n'
      )
    out = testutil.run(script, timeout=300)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    self.assertEqual(out.stdout.count('examples 300'), 1)  # run once, not once more per worker

  def test_a_tfds_dataset_takes_the_same_path(self):
    local = self.prepare()  # prepares the corpus as a TFDS dataset in data_dir
    builder = registry.get('parallel_text').make_builder(_config(self.data_dir, self.files))
    tfds_name = f'{builder.name}/{builder.builder_config.name}'
    config = _config(self.data_dir, '', name='tfds', tfds_name=tfds_name, source_lang='source', target_lang='target')
    first = pipeline.prepare(config, self.create_tempdir().full_path)
    with _no_raw_text():
      second = pipeline.prepare(config, self.create_tempdir().full_path)
    self.assert_same_data(first, second)
    self.assertEqual(first.report['splits'], local.report['splits'])
    with open(os.path.join(self.cache_folders()[0], 'COMMIT'), encoding='utf-8') as f:
      self.assertEqual(json.load(f)['splits']['train'], len(first.splits['train']))


if __name__ == '__main__':
  absltest.main()
