"""Tests of s2s_jax.metrics: token sums against a numpy reference, and text scores against sacreBLEU itself."""

import gzip
import math
import os

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
import shared_data

from s2s_jax import metrics

jax.config.update('jax_numpy_rank_promotion', 'raise')


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  m = x.max(axis=-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _batch(seed: int = 0, b: int = 3, t: int = 5, v: int = 7):
  """Random logits and targets; row i keeps its first t - i tokens (the rest is padding)."""
  rng = np.random.RandomState(seed)
  logits = rng.normal(size=(b, t, v)).astype(np.float32) * 3
  targets = rng.randint(0, v, size=(b, t)).astype(np.int32)
  weights = (np.arange(t)[None, :] < (t - np.arange(b))[:, None]).astype(np.float32)
  return logits, targets, weights


class TokenMetricsTest(parameterized.TestCase):
  @parameterized.parameters(0, 1, 2)
  def test_weighted_xent_equals_numpy_nll(self, seed):
    logits, targets, weights = _batch(seed)
    logp = _log_softmax(logits)
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    expected = (nll * weights).sum()
    loss, nll_sum = jax.jit(metrics.weighted_xent)(logits, targets, weights)
    np.testing.assert_allclose(nll_sum, expected, rtol=1e-5)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)  # no smoothing: the loss is the NLL

  def test_padded_tokens_do_not_count(self):
    logits, targets, weights = _batch()
    _, base = metrics.weighted_xent(logits, targets, weights)
    # Anything at a padded position (weight 0) must not change the sums.
    noisy_logits = np.where(weights[..., None] > 0, logits, 1e4 * np.sign(logits)).astype(np.float32)
    noisy_targets = np.where(weights > 0, targets, 0).astype(np.int32)
    _, changed = metrics.weighted_xent(noisy_logits, noisy_targets, weights)
    np.testing.assert_allclose(changed, base, rtol=1e-6)
    _, zero = metrics.weighted_xent(logits, targets, np.zeros_like(weights))
    self.assertEqual(float(zero), 0.0)

  @parameterized.parameters(0.1, 0.2, 0.5)
  def test_label_smoothing(self, eps):
    logits, targets, weights = _batch(3)
    logp = _log_softmax(logits)
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    # Cross-entropy with the smoothed distribution (1 - eps) * onehot + eps / V, written out per class.
    v = logits.shape[-1]
    smoothed = (1 - eps) * np.eye(v)[targets] + eps / v
    expected_loss = (-(smoothed * logp).sum(-1) * weights).sum()
    np.testing.assert_allclose(expected_loss, (((1 - eps) * nll - eps * logp.mean(-1)) * weights).sum(), rtol=1e-10)
    loss, nll_sum = metrics.weighted_xent(logits, targets, weights, label_smoothing=eps)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
    np.testing.assert_allclose(nll_sum, (nll * weights).sum(), rtol=1e-5)  # the reported NLL is never smoothed
    self.assertNotAlmostEqual(float(loss), float(nll_sum), places=2)

  @parameterized.parameters(0.0, 0.1)
  def test_gradient_equals_autodiff_of_log_softmax(self, eps):
    """`token_xent`'s hand-written backward pass against autodiff of the textbook expression, for both outputs."""
    logits, targets, weights = _batch(4)

    def reference(lg):
      logp = jax.nn.log_softmax(lg, axis=-1)
      nll = -jnp.take_along_axis(logp, jnp.asarray(targets)[..., None], axis=-1)[..., 0]
      loss = (1 - eps) * nll - eps * logp.mean(-1)
      return (loss * weights).sum() + 0.3 * (nll * weights).sum()

    got = jax.grad(lambda lg: (lambda a, b: a + 0.3 * b)(*metrics.weighted_xent(lg, targets, weights, eps)))(logits)
    np.testing.assert_allclose(got, jax.grad(reference)(jnp.asarray(logits)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[weights == 0], 0.0)

  def test_bfloat16_logits_are_computed_in_float32(self):
    logits, targets, weights = _batch()
    loss, nll_sum = metrics.weighted_xent(jnp.asarray(logits, jnp.bfloat16), targets, weights)
    self.assertEqual((loss.dtype, nll_sum.dtype), (jnp.float32, jnp.float32))
    _, exact = metrics.weighted_xent(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), targets, weights)
    np.testing.assert_allclose(nll_sum, exact, rtol=1e-6)

  def test_token_sums(self):
    logits, targets, weights = _batch(4)
    argmax = logits.argmax(-1)
    targets[0, :3] = argmax[0, :3]  # three weighted hits
    targets[2, 4] = argmax[2, 4]  # a hit on a padded position: must not count
    weights[2, 4] = 0
    expected_correct = ((argmax == targets) * weights).sum()
    self.assertGreaterEqual(expected_correct, 3)
    _, nll_sum = metrics.weighted_xent(logits, targets, weights)
    sums = jax.jit(metrics.token_sums)(nll_sum, logits, targets, weights)
    self.assertEqual(set(sums), {'loss_sum', 'correct_sum', 'num_tokens'})
    self.assertEqual(float(sums['correct_sum']), expected_correct)
    self.assertEqual(float(sums['num_tokens']), weights.sum())
    np.testing.assert_allclose(sums['loss_sum'], nll_sum)
    all_right = metrics.token_sums(nll_sum, logits, argmax.astype(np.int32), weights)
    self.assertEqual(float(all_right['correct_sum']), weights.sum())

  def test_finalize_token_sums(self):
    out = metrics.finalize_token_sums(
      {'loss_sum': np.float32(6.0), 'correct_sum': np.float32(3.0), 'num_tokens': np.float32(4.0)}
    )
    self.assertEqual(set(out), {'loss', 'perplexity', 'token_accuracy'})
    self.assertAlmostEqual(out['loss'], 1.5)
    self.assertAlmostEqual(out['perplexity'], math.exp(1.5), places=5)
    self.assertAlmostEqual(out['token_accuracy'], 75.0)
    for value in out.values():
      self.assertIsInstance(value, float)

  def test_finalize_sums_from_devices(self):
    logits, targets, weights = _batch(5)
    _, nll_sum = metrics.weighted_xent(logits, targets, weights)
    out = metrics.finalize_token_sums(jax.device_get(metrics.token_sums(nll_sum, logits, targets, weights)))
    logp = _log_softmax(logits)
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    mean = (nll * weights).sum() / weights.sum()
    self.assertAlmostEqual(out['loss'], mean, places=5)
    self.assertAlmostEqual(out['perplexity'], math.exp(mean), places=3)
    self.assertBetween(out['token_accuracy'], 0.0, 100.0)

  def test_finalize_with_no_tokens(self):
    out = metrics.finalize_token_sums({'loss_sum': 0.0, 'correct_sum': 0.0, 'num_tokens': 0.0})
    for value in out.values():
      self.assertTrue(math.isfinite(value), msg=out)
    self.assertEqual((out['loss'], out['token_accuracy']), (0.0, 0.0))

  def test_finalize_huge_loss_stays_finite(self):
    out = metrics.finalize_token_sums({'loss_sum': 1e6, 'correct_sum': 0, 'num_tokens': 10})
    self.assertEqual(out['loss'], 1e5)
    self.assertTrue(math.isfinite(out['perplexity']))

  def test_sums_split_over_devices_add_up(self):
    logits, targets, weights = _batch(6, b=8)

    def per_device(lg, tg, w):
      _, nll_sum = metrics.weighted_xent(lg, tg, w)
      return jax.lax.psum(metrics.token_sums(nll_sum, lg, tg, w), 'batch')

    n = jax.local_device_count()
    self.assertEqual(8 % n, 0)
    shard = lambda x: x.reshape((n, -1) + x.shape[1:])
    sums = jax.pmap(per_device, axis_name='batch')(shard(logits), shard(targets), shard(weights))
    _, nll_sum = metrics.weighted_xent(logits, targets, weights)
    whole = metrics.token_sums(nll_sum, logits, targets, weights)
    for key in whole:
      np.testing.assert_allclose(sums[key][0], whole[key], rtol=1e-5)


_HYPS = [
  'the cat sat on the mat',
  'a dog barks at night',
  'The Quick brown fox',
  'hello world',
  'it is raining today in paris',
  'one two three four five',
]
_REFS = [
  'the cat sat on a mat',
  'the dog barks at night',
  'the quick brown fox jumps',
  'hello world',
  'it was raining yesterday in paris',
  'one two three four five six',
]
_REFS2 = [
  'a cat sat on the mat',
  'a dog barks at night',
  'the quick brown fox',
  'hello there world',
  'it rains today in paris',
  'one two three four',
]


class TextScoresTest(parameterized.TestCase):
  @parameterized.parameters(([_REFS],), ([_REFS, _REFS2],))
  def test_equal_to_sacrebleu(self, refs):
    scores = metrics.text_scores(_HYPS, refs)
    self.assertAlmostEqual(scores['bleu'], sacrebleu.corpus_bleu(_HYPS, refs).score, places=9)
    self.assertAlmostEqual(scores['bleu_lc'], sacrebleu.corpus_bleu(_HYPS, refs, lowercase=True).score, places=9)
    self.assertAlmostEqual(scores['chrf'], sacrebleu.corpus_chrf(_HYPS, refs).score, places=9)
    self.assertBetween(scores['bleu'], 1.0, 99.0)
    self.assertBetween(scores['chrf'], 1.0, 99.0)
    self.assertIn(f'nrefs:{len(refs)}', scores['bleu_signature'])
    self.assertIn('tok:13a', scores['bleu_signature'])
    self.assertIn('case:mixed', scores['bleu_signature'])
    self.assertIn('version:' + sacrebleu.__version__, scores['bleu_signature'])
    self.assertIn(f'nrefs:{len(refs)}', scores['chrf_signature'])
    self.assertIn('nc:6', scores['chrf_signature'])

  def test_rouge_and_error_rates_equal_the_libraries(self):
    import jiwer  # pylint: disable=g-import-not-at-top
    from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top

    scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)
    got = metrics.rouge(_HYPS, [_REFS, _REFS2])
    for name in ('rouge1', 'rouge2', 'rougeL'):
      per_ref = [[scorer.score(refs[i], h)[name].fmeasure for refs in (_REFS, _REFS2)] for i, h in enumerate(_HYPS)]
      self.assertAlmostEqual(got[name], 100 * np.mean([np.mean(f) for f in per_ref]), places=9)
      self.assertAlmostEqual(got[f'{name}_max'], 100 * np.mean([max(f) for f in per_ref]), places=9)
    rates = metrics.error_rates(_HYPS, [_REFS, _REFS2])  # the first reference stream only
    self.assertAlmostEqual(rates['wer'], 100 * jiwer.wer(_REFS, _HYPS), places=9)
    self.assertAlmostEqual(rates['cer'], 100 * jiwer.cer(_REFS, _HYPS), places=9)

  def test_rouge_and_error_rates_by_hand(self):
    self.assertAlmostEqual(metrics.rouge(['the cat'], [['the cat sat']])['rouge1'], 80.0)  # P 1, R 2/3
    self.assertAlmostEqual(metrics.rouge(['cats sat'], [['the cat sat']])['rouge2'], 200 / 3)  # stemmed; P 1, R 1/2
    rates = metrics.error_rates(['a b c d'], [['a x c']])  # one substitution, one insertion; 3 reference words
    self.assertAlmostEqual(rates['wer'], 200 / 3)
    self.assertAlmostEqual(rates['cer'], 100 * 3 / 5)  # 'a b c d' vs 'a x c': b -> x, ' d' inserted

  def test_keys(self):
    scores = metrics.text_scores(_HYPS, [_REFS])
    self.assertEqual(
      set(scores), {'bleu', 'bleu_signature', 'bleu_lc', 'chrf', 'chrf_signature', 'exact_match', 'len_ratio'}
    )
    for key, value in scores.items():
      self.assertIsInstance(value, str if key.endswith('signature') else float, msg=key)

  def test_perfect_and_disjoint(self):
    perfect = metrics.text_scores(_REFS, [_REFS])
    self.assertAlmostEqual(perfect['bleu'], 100.0)
    self.assertAlmostEqual(perfect['chrf'], 100.0)
    self.assertEqual(perfect['exact_match'], 100.0)
    self.assertAlmostEqual(perfect['len_ratio'], 1.0)
    disjoint = metrics.text_scores(['xyzzy plugh'] * 2, [['alpha beta', 'gamma delta']])
    self.assertEqual((disjoint['bleu'], disjoint['exact_match']), (0.0, 0.0))

  def test_lowercased_bleu(self):
    hyps = ['The Cat Sat On The Mat', 'HELLO WORLD AGAIN', 'a dog barks at night']
    refs = [['the cat sat on the mat', 'hello world again', 'a dog barks at night']]
    scores = metrics.text_scores(hyps, refs)
    self.assertGreater(scores['bleu_lc'], scores['bleu'])
    self.assertAlmostEqual(scores['bleu_lc'], 100.0)
    self.assertIn('case:mixed', scores['bleu_signature'])  # the main BLEU is cased
    same = metrics.text_scores(_REFS, [_REFS2])
    self.assertGreaterEqual(same['bleu_lc'], same['bleu'])

  def test_exact_match_with_several_reference_streams(self):
    hyps = ['a b', 'c d', 'e f', 'g h']
    refs = [['a b', 'x', 'y', 'G H'], ['z', 'c d', 'w', 'v']]
    self.assertEqual(metrics.text_scores(hyps, refs)['exact_match'], 50.0)  # 'G H' is not 'g h'
    self.assertEqual(metrics.exact_match(hyps, refs), 50.0)
    self.assertEqual(metrics.exact_match(hyps, refs[:1]), 25.0)

  def test_len_ratio(self):
    hyps = ['a b c', 'd e']  # 5 tokens
    refs = [['a b c d', 'd e f g']]  # 8 tokens
    self.assertAlmostEqual(metrics.text_scores(hyps, refs)['len_ratio'], 5 / 8)
    # With several references, sacreBLEU's effective reference length is the closest one per sentence.
    refs2 = [['a b c d', 'd e f g'], ['a b c', 'd e f']]  # closest reference lengths: 3 and 3
    self.assertAlmostEqual(metrics.text_scores(hyps, refs2)['len_ratio'], 5 / 6)
    long = metrics.text_scores(['a b c d e f'], [['a b c']])
    self.assertAlmostEqual(long['len_ratio'], 2.0)

  def test_unicode_and_empty_hypotheses(self):
    hyps = ['le 21 août 1998', '', 'déc. 3']
    refs = [['le 21 août 1998', 'rien', 'déc. 3']]
    scores = metrics.text_scores(hyps, refs)
    self.assertAlmostEqual(scores['bleu'], sacrebleu.corpus_bleu(hyps, refs).score)
    self.assertAlmostEqual(scores['exact_match'], 200 / 3)


class ExactMatchTest(parameterized.TestCase):
  @parameterized.parameters(
    (['a b'], [[' a b ']], 100.0),
    (['a b\n'], [['a b']], 100.0),
    (['\ta b'], [['a b']], 100.0),
    (['a  b'], [['a b']], 0.0),
    (['A b'], [['a b']], 0.0),
    (['a b', 'c'], [['a b', 'd']], 50.0),
    ([], [[]], 0.0),
  )
  def test_strips_whitespace_only(self, hyps, refs, expected):
    self.assertEqual(metrics.exact_match(hyps, refs), expected)

  @given(st.lists(st.text(max_size=6), min_size=1, max_size=10), st.integers(0, 100))
  def test_counts_equal_pairs(self, refs, seed):
    rng = np.random.RandomState(seed)
    hit = rng.rand(len(refs)) < 0.5
    hyps = [r if h else r + 'x' for r, h in zip(refs, hit)]
    self.assertAlmostEqual(metrics.exact_match(hyps, [refs]), 100.0 * hit.sum() / len(refs))


class BleuByLengthTest(parameterized.TestCase):
  def _corpus(self, lengths, seed=0):
    rng = np.random.RandomState(seed)
    words = [f'w{i}' for i in range(6)]
    refs = [' '.join(rng.choice(words, 3 + i % 5)) for i in range(len(lengths))]
    hyps = [r if i % 3 else ' '.join(r.split()[::-1]) for i, r in enumerate(refs)]
    return hyps, [refs]

  def test_buckets_match_sacrebleu(self):
    lengths = [0, 3, 10, 11, 20, 25, 41, 59, 60, 61, 75, 9, 12]
    hyps, refs = self._corpus(lengths)
    out = metrics.bleu_by_length(hyps, refs, lengths)
    self.assertEqual(sum(b['n'] for b in out), len(lengths))
    expected_bounds = [(0, 10), (11, 20), (21, 30), (41, 50), (51, 60), (61, 75)]  # 31-40 is empty: omitted
    self.assertEqual([(b['min_len'], b['max_len']) for b in out], expected_bounds)
    for b in out:
      idx = [i for i, n in enumerate(lengths) if b['min_len'] <= n <= b['max_len']]
      self.assertLen(idx, b['n'], msg=b)
      expected = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[r[i] for i in idx] for r in refs]).score
      self.assertAlmostEqual(b['bleu'], expected, msg=b)
    self.assertEqual([b['n'] for b in out], [4, 3, 1, 1, 2, 2])

  def test_custom_edges_and_several_references(self):
    lengths = [1, 2, 3, 4, 5, 6]
    hyps, refs = self._corpus(lengths, seed=1)
    refs = refs + [[r.upper() for r in refs[0]]]
    out = metrics.bleu_by_length(hyps, refs, lengths, edges=(2, 4))
    self.assertEqual([(b['min_len'], b['max_len'], b['n']) for b in out], [(0, 2, 2), (3, 4, 2), (5, 6, 2)])
    for b, idx in zip(out, ([0, 1], [2, 3], [4, 5])):
      expected = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[r[i] for i in idx] for r in refs]).score
      self.assertAlmostEqual(b['bleu'], expected)

  def test_nothing_over_the_last_edge(self):
    out = metrics.bleu_by_length(['a b', 'c d'], [['a b', 'c e']], [5, 60])
    self.assertEqual([(b['min_len'], b['max_len'], b['n']) for b in out], [(0, 10, 1), (51, 60, 1)])

  @given(st.lists(st.integers(0, 150), min_size=1, max_size=30))
  def test_every_sentence_in_exactly_one_bucket(self, lengths):
    hyps = ['a b c d'] * len(lengths)
    out = metrics.bleu_by_length(hyps, [hyps], lengths)
    self.assertEqual(sum(b['n'] for b in out), len(lengths))
    for b in out:
      self.assertLessEqual(b['min_len'], b['max_len'])
      self.assertEqual(b['n'], sum(b['min_len'] <= n <= b['max_len'] for n in lengths), msg=(b, out))
      self.assertAlmostEqual(b['bleu'], 100.0)
    for prev, nxt in zip(out, out[1:]):
      self.assertLess(prev['max_len'], nxt['min_len'])
    # Documented bounds: [0, 10], [11, 20], ..., [51, 60], then [61, longest source].
    allowed = [(0, 10)] + [(lo + 1, lo + 10) for lo in range(10, 60, 10)] + [(61, max(lengths))]
    for b in out:
      self.assertIn((b['min_len'], b['max_len']), allowed)


class TokenizedBleuTest(parameterized.TestCase):
  def test_bleu_tok_equals_bleu_on_moses_lc_text_with_tokenize_none(self):
    hyps = ["A man's dog runs.", 'Two women, sitting.']
    refs = [["a man's dog is running.", 'Two women are sitting.']]
    got = metrics.text_scores(hyps, refs, ('bleu_tok',), 'en')
    tok = lambda xs: [metrics.moses_lc([x], 'en')[0] for x in xs]
    want = sacrebleu.metrics.BLEU(tokenize='none').corpus_score(tok(hyps), [tok(refs[0])]).score
    self.assertAlmostEqual(got['bleu_tok'], want)
    self.assertIn('tok:none', got['bleu_tok_signature'])
    self.assertEqual(metrics.moses_lc(["A man's dog."], 'en'), ['a man &apos;s dog .'])

  def test_moses_lc_reproduces_the_multi30k_tok_files(self):
    root = shared_data.require(self, 'multi30k', 'task1')
    raw_path = os.path.join(root, 'raw', 'test_2016_flickr.en.gz')
    with gzip.open(raw_path, 'rt', encoding='utf-8') as f:
      raw = f.read().splitlines()[:200]
    with open(os.path.join(root, 'tok', 'test_2016_flickr.lc.norm.tok.en'), encoding='utf-8') as f:
      tok = f.read().splitlines()[:200]
    self.assertEqual(metrics.moses_lc(raw, 'en'), tok)


if __name__ == '__main__':
  absltest.main()
