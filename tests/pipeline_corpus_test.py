"""The data pipeline end to end on a small real slice of Multi30k: corpus -> vocabularies -> batches."""

import gzip
import itertools
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import shared_data

from s2s_jax import config_lib
from s2s_jax.data import EOS_ID
from s2s_jax.data import PAD_ID
from s2s_jax.data import batches
from s2s_jax.data import pipeline


def _slice_multi30k(test: absltest.TestCase, n: int = 300) -> str:
  """Copies the first n lines of each de/en raw split into a temp manual dir; skips where the data is absent."""
  root = shared_data.require(test, 'multi30k', 'task1', 'raw')
  manual = test.create_tempdir('raw').full_path
  os.makedirs(os.path.join(manual, 'task1', 'raw'))
  for split, lang in itertools.product(('train', 'val', 'test_2016_flickr'), ('de', 'en')):
    name = f'{split}.{lang}.gz'
    with gzip.open(os.path.join(root, name), 'rt', encoding='utf-8') as f:
      lines = list(itertools.islice(f, n))
    with gzip.open(os.path.join(manual, 'task1', 'raw', name), 'wt', encoding='utf-8') as f:
      f.writelines(lines)
  return manual


class Multi30kPipelineTest(parameterized.TestCase):
  @parameterized.parameters(('moses', 0), ('sentencepiece', 300), ('word', 0), ('char', 0))
  def test_prepare_and_batch(self, tokenizer, max_vocab_size):
    c = config_lib.base_config()
    c.data.update(
      name='multi30k',
      source_lang='de',
      target_lang='en',
      tokenizer=tokenizer,
      lowercase=True,
      max_vocab_size=max_vocab_size,
      manual_dir=_slice_multi30k(self),
      data_dir=self.create_tempdir('prepared').full_path,
      max_src_len=40,
      max_tgt_len=40,
      num_buckets=3,
      batch_size=16,
    )
    vocab_dir = self.create_tempdir('workdir').full_path
    data = pipeline.prepare(c.data, vocab_dir=vocab_dir)
    self.assertEqual({k: len(v.sources) for k, v in data.splits.items()}['test'], 300)
    self.assertEqual(data.splits['test'].targets[0], 'A man in an orange hat starring at something.')
    self.assertTrue(os.path.exists(os.path.join(vocab_dir, 'vocab.src.json')))
    # Every test target decodes back to its lowercased text (up to UNKs and, for word, spacing).
    tgt = data.splits['test']
    decoded = data.tgt_vocab.decode(tgt.tgt_ids[0])
    if tokenizer in ('moses', 'sentencepiece', 'char'):
      self.assertEqual(decoded.replace('<unk>', '?')[:10], tgt.targets[0].lower()[:10])
    batch = next(batches.train_iterator(data, 16, seed=0))
    self.assertEqual(batch['inputs'].dtype, np.int32)
    self.assertEqual(batch['inputs'].shape[0], 16)
    for row, mask, target in zip(batch['inputs'], batch['inputs_mask'], batch['targets']):
      n = int(mask.sum())
      if n:
        self.assertEqual(row[n - 1], EOS_ID)
        self.assertTrue((row[n:] == PAD_ID).all())
        self.assertIn(EOS_ID, target)
    report = data.report
    self.assertLen(report['train_buckets'], 3)
    self.assertGreater(report['splits']['train']['source_len']['mean'], 5)
    if tokenizer != 'char':  # characters: most lines exceed 40 steps and are filtered, leaving filler rows
      self.assertLess(report['splits']['train']['padding_fraction']['source'], 0.6)
    else:
      self.assertGreater(report['splits']['train']['filtered']['source_too_long'], 100)


if __name__ == '__main__':
  absltest.main()
