"""s2s_jax/data/encoding.py: the array encoder of text pairs (`encode_flat`, behind `encode` and the id cache) gives
exactly what the example-by-example encoder gives, for every tokenizer and length policy."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from s2s_jax.data import EOS_ID
from s2s_jax.data import SPECIAL_TOKENS
from s2s_jax.data import encoding
from s2s_jax.data import vocab as vocab_lib

_WORDS = ['der', 'Hund', 'läuft', 'schnell', 'the', 'dog', 'runs', 'fast', 'Août', '1998', '</s>', '<pad>', ',', '.']


def _texts(rng: np.random.Generator, n: int) -> list[str]:
  """Random sentences of 0-25 words (some empty, some long, some with special-token literals and odd spacing)."""
  out = []
  for _ in range(n):
    words = rng.choice(_WORDS, size=int(rng.integers(0, 26)))
    sep = ' ' if rng.random() < 0.8 else '  '
    out.append(sep.join(words) + (' ' if rng.random() < 0.1 else ''))
  return out


def _vocab(kind: str, texts: list[str], lowercase: bool):
  train = texts[: len(texts) // 2]  # words of the other half are unknown
  size = 30 if kind == 'sentencepiece' else 12
  return vocab_lib.build(train, kind, lowercase=lowercase, max_size=size, lang='de')


class EncodeFlatTest(parameterized.TestCase):
  @parameterized.product(
    kind=['char', 'word', 'moses', 'sentencepiece'],
    lowercase=[False, True],
    train=[True, False],
    reverse_source=[False, True],
  )
  def test_same_as_example_by_example(self, kind, lowercase, train, reverse_source):
    rng = np.random.default_rng(0)
    sources, targets = _texts(rng, 200), _texts(rng, 200)
    sources[3], targets[4] = '', ''  # empty on each side
    src_vocab, tgt_vocab = _vocab(kind, sources, lowercase), _vocab(kind, targets, lowercase)
    pairs = list(zip(sources, targets))
    policies = ('filter', 'truncate')
    for src_policy, tgt_policy, max_len in itertools.product(policies, policies, (1, 6, 30)):
      policy = encoding.LengthPolicy(max_len, max_len + 2, src_policy, tgt_policy, reverse_source)
      want = encoding.encode_each(pairs, src_vocab, tgt_vocab, policy, train)
      got = encoding.encode(pairs, src_vocab, tgt_vocab, policy, train)
      self.assertEqual(got.kept, want.kept)
      self.assertEqual([x.tolist() for x in got.src_ids], [x.tolist() for x in want.src_ids])
      self.assertEqual([x.tolist() for x in got.tgt_ids], [x.tolist() for x in want.tgt_ids])
      self.assertTrue(all(x.dtype == np.int32 for x in got.src_ids + got.tgt_ids))
      for side in encoding.SIDES:
        np.testing.assert_array_equal(got.lengths[side], want.lengths[side])
      self.assertEqual(list(got.filtered.items()), list(want.filtered.items()))
      self.assertEqual(list(got.truncated.items()), list(want.truncated.items()))
      self.assertEqual(got.unk, want.unk)
      self.assertEqual(encoding.report(got), encoding.report(want))
    if train:
      self.assertTrue(want.filtered, 'the cases above must drop some examples')

  def test_records(self):
    rng = np.random.default_rng(1)
    sources, targets = _texts(rng, 50), _texts(rng, 50)
    src_vocab, tgt_vocab = _vocab('word', sources, False), _vocab('word', targets, False)
    policy = encoding.LengthPolicy(8, 8, 'truncate', 'filter', False)
    flat = encoding.encode_flat(list(zip(sources, targets)), src_vocab, tgt_vocab, policy, True)
    blob, offsets = flat.records()
    want = encoding.encode_each(list(zip(sources, targets)), src_vocab, tgt_vocab, policy, True)
    self.assertLen(offsets, len(want.kept) + 1)
    for i, (src, tgt) in enumerate(zip(want.src_ids, want.tgt_ids)):
      record = np.frombuffer(blob[offsets[i] : offsets[i + 1]], np.int32)
      self.assertEqual(record.tolist(), [len(src), *src.tolist(), *tgt.tolist()])
      self.assertEqual(record[len(src)], EOS_ID)

  def test_empty_chunk(self):
    vocab = vocab_lib.build(['a b'], 'word')
    policy = encoding.LengthPolicy(5, 5, 'filter', 'filter', False)
    self.assertEqual(encoding.encode_flat([], vocab, vocab, policy, True).records(), (b'', [0]))
    self.assertEqual(encoding.encode([], vocab, vocab, policy, True).src_ids, [])

  def test_special_literals_are_unknown(self):
    vocab = vocab_lib.TokenTable(list(SPECIAL_TOKENS) + ['a'], 'word')
    ids, lengths = vocab.encode_many(['a </s> <pad>', ''])
    self.assertEqual((ids.tolist(), lengths.tolist()), ([4, 1, 1], [3, 0]))


if __name__ == '__main__':
  absltest.main()
