"""Tests for s2s_jax.decode (beam search; greedy is beam 1)."""
# pylint: disable=invalid-name
import functools
import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
from hypothesis import given
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import decode

jax.config.update('jax_numpy_rank_promotion', 'raise')

# The decoder takes its ids as arguments; these toy ids deliberately differ
# from the project's (PAD=0, BOS=2, EOS=3) so nothing can depend on them.
PAD, EOS, BOS = 0, 1, 2
A, B = 3, 4  # the real tokens of the hand-built Markov chains
MAX_ROWS = 8  # batch rows a toy model has initial states for
MAX_STEPS = 8  # steps a toy model has position biases for


@functools.lru_cache(maxsize=None)
def _rnn_model(seed: int, vocab_size: int, logits_dtype: str = 'float32',
               eos_logit: float | None = None, hidden: int = 8):
  """A tiny random RNN; returns (step_fn, init_state(rows))."""
  rng = np.random.default_rng(seed)
  emb_VxH = jnp.asarray(rng.normal(size=(vocab_size, hidden)), jnp.float32)
  w_HxH = jnp.asarray(
      rng.normal(size=(hidden, hidden)) / np.sqrt(hidden), jnp.float32)
  out_HxV = jnp.asarray(
      1.5 * rng.normal(size=(hidden, vocab_size)), jnp.float32)
  pos_bias_TxV = jnp.asarray(
      rng.normal(size=(MAX_STEPS, vocab_size)), jnp.float32)
  init_h = rng.normal(size=(MAX_ROWS, hidden)).astype(np.float32)

  def step_fn(ids_N, state):
    h_NxH = jnp.tanh(emb_VxH[ids_N] + state['h'] @ w_HxH)
    step_N = jnp.minimum(state['count'], MAX_STEPS - 1)
    logits_NxV = h_NxH @ out_HxV + pos_bias_TxV[step_N]
    if eos_logit is not None:
      logits_NxV = logits_NxV.at[:, EOS].set(eos_logit)
    new_state = {'h': h_NxH, 'count': state['count'] + 1}
    return logits_NxV.astype(logits_dtype), new_state

  def init_state(rows):
    rows = list(rows)
    return {'h': jnp.asarray(init_h[rows]),
            'count': jnp.zeros((len(rows),), jnp.int32)}

  return step_fn, init_state


def _markov_model(probs: np.ndarray):
  """A Markov chain with one table per batch row, optionally per step.

  Args:
    probs: next-token probabilities given the previous token, [R, V, V], or
      [R, S, V, V] for step-dependent chains (the last table repeats).
      All-zero rows (tokens the chain never emits) give NaN logits: dead beam
      slots feed such ids, and the decoder must not let their output leak.

  Returns:
    (step_fn, init_state(rows)); the state is each row's table id and step.
  """
  probs_RxSxVxV = probs if probs.ndim == 4 else probs[:, None]
  with np.errstate(divide='ignore'):
    logits_RxSxVxV = np.log(probs_RxSxVxV)
  logits_RxSxVxV[(probs_RxSxVxV == 0).all(-1)] = np.nan
  logits_RxSxVxV = jnp.asarray(logits_RxSxVxV, jnp.float32)
  last_step = logits_RxSxVxV.shape[1] - 1

  def step_fn(ids_N, state):
    step_N = jnp.minimum(state['step'], last_step)
    logits_NxV = logits_RxSxVxV[state['table'], step_N, ids_N]
    return logits_NxV, {'table': state['table'], 'step': state['step'] + 1}

  def init_state(rows):
    rows = list(rows)
    return {'table': jnp.asarray(rows, jnp.int32),
            'step': jnp.zeros((len(rows),), jnp.int32)}

  return step_fn, init_state


@functools.lru_cache(maxsize=None)
def _decoder(step_fn, **kwargs):
  """One jitted beam search per (model, static configuration)."""
  kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD) | kwargs
  return jax.jit(functools.partial(decode.beam_search, step_fn, **kwargs))


def _run(model, rows, **kwargs):
  step_fn, init_state = model
  seqs, scores = _decoder(step_fn, batch_size=len(rows), **kwargs)(
      init_state(rows))
  return np.asarray(seqs), np.asarray(scores)


def _lengths(seqs_MxT: np.ndarray) -> np.ndarray:
  """|y|: up to and including the first EOS, else the full length."""
  is_eos = seqs_MxT == EOS
  return np.where(is_eos.any(-1), is_eos.argmax(-1) + 1, seqs_MxT.shape[-1])


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced_logp(step_fn, state, seqs_NxT):
  """log p(y_t | y_<t) for every position; [N, T] float32."""
  ids_N = jnp.full(seqs_NxT.shape[:1], BOS, jnp.int32)
  logp_T = []
  for t in range(seqs_NxT.shape[1]):
    logits_NxV, state = step_fn(ids_N, state)
    logp_NxV = jax.nn.log_softmax(logits_NxV.astype(jnp.float32))
    ids_N = seqs_NxT[:, t]
    logp_T.append(jnp.take_along_axis(logp_NxV, ids_N[:, None], axis=1)[:, 0])
  return jnp.stack(logp_T, axis=1)


def _rescore(model, rows, seqs_BxKxT: np.ndarray, alpha: float) -> np.ndarray:
  """Teacher-forces step_fn along each sequence; returns normalized scores."""
  step_fn, init_state = model
  batch_size, beam_size, max_len = seqs_BxKxT.shape
  seqs_NxT = seqs_BxKxT.reshape(-1, max_len)
  lengths_N = _lengths(seqs_NxT)
  state = decode.expand_to_beams(init_state(rows), beam_size)
  logp_NxT = np.asarray(_teacher_forced_logp(step_fn, state, seqs_NxT))
  # A float32 running sum, like the decoder's.
  cumsum_NxT = np.cumsum(logp_NxT, axis=1, dtype=np.float32)
  total_N = cumsum_NxT[np.arange(len(lengths_N)), lengths_N - 1]
  penalty_N = ((5.0 + lengths_N) / 6.0) ** alpha
  return (total_N / penalty_N).reshape(batch_size, beam_size)


def _greedy(model, rows, max_len):
  """Reference argmax chain, PAD excluded, stopping at EOS."""
  step_fn, init_state = model
  state = init_state(rows)
  ids = np.full((len(rows),), BOS, np.int32)
  seqs = np.full((len(rows), max_len), PAD, np.int32)
  alive = np.ones((len(rows),), bool)
  for t in range(max_len):
    logits, state = step_fn(jnp.asarray(ids), state)
    logits = np.array(logits.astype(jnp.float32))
    logits[:, PAD] = -np.inf
    ids = logits.argmax(-1).astype(np.int32)
    seqs[:, t] = np.where(alive, ids, PAD)
    alive &= ids != EOS
  return seqs


def _brute_force(model, row, vocab_size, max_len, alpha, with_eos):
  """Every possible output of one row, best first: (seqs_MxT, scores_M)."""
  tokens = [v for v in range(vocab_size) if v not in (PAD, EOS)]
  if with_eos:  # finished ones; those without EOS are only the fallback
    seqs = [p + (EOS,) + (PAD,) * (max_len - n - 1)
            for n in range(max_len)
            for p in itertools.product(tokens, repeat=n)]
  else:
    seqs = list(itertools.product(tokens, repeat=max_len))
  seqs_1xMxT = np.asarray(seqs, np.int32)[None]
  scores_M = _rescore(model, [row], seqs_1xMxT, alpha)[0]
  order = np.argsort(-scores_M, kind='stable')
  return seqs_1xMxT[0][order], scores_M[order]


def _check_invariants(test, seqs_BxKxT, scores_BxK, expected_BxK):
  """Shared properties of any beam-search output."""
  test.assertFalse(np.isnan(scores_BxK).any())
  np.testing.assert_array_equal(
      scores_BxK, -np.sort(-scores_BxK, axis=1), err_msg='not best first')
  finite = np.isfinite(scores_BxK)
  np.testing.assert_allclose(scores_BxK[finite], expected_BxK[finite],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(seqs_BxKxT[~finite], PAD)
  for seq, ok in zip(seqs_BxKxT.reshape(-1, seqs_BxKxT.shape[-1]),
                     finite.reshape(-1)):
    if not ok:
      continue
    length = _lengths(seq[None])[0]
    test.assertNotIn(PAD, seq[:length], msg=f'PAD inside {seq}')
    test.assertNotIn(EOS, seq[:length - 1], msg=f'EOS before end of {seq}')
    np.testing.assert_array_equal(seq[length:], PAD, err_msg=str(seq))
  for b in range(seqs_BxKxT.shape[0]):
    hyps = [tuple(s) for s, ok in zip(seqs_BxKxT[b], finite[b]) if ok]
    test.assertLen(set(hyps), len(hyps), msg=f'duplicates in row {b}')


class BeamSearchTest(parameterized.TestCase):

  @parameterized.parameters('float32', 'bfloat16')
  def test_beam_one_is_the_argmax_chain(self, logits_dtype):
    model = _rnn_model(0, 7, logits_dtype)
    rows = range(6)
    seqs, scores = _run(model, rows, beam_size=1, max_len=7)
    np.testing.assert_array_equal(seqs[:, 0], _greedy(model, rows, 7))
    self.assertTrue((_lengths(seqs[:, 0]) < 7).any())  # some rows finished
    np.testing.assert_allclose(scores, _rescore(model, rows, seqs, 0.0),
                               rtol=1e-5, atol=1e-5)

  @parameterized.product(beam_size=[1, 3, 5], length_alpha=[0.0, 0.7])
  def test_scores_equal_teacher_forced_rescoring(self, beam_size,
                                                 length_alpha):
    model = _rnn_model(1, 6)
    rows = range(3)
    seqs, scores = _run(model, rows, beam_size=beam_size, max_len=6,
                        length_alpha=length_alpha)
    self.assertEqual((seqs.dtype, scores.dtype), (np.int32, np.float32))
    chex.assert_shape(seqs, (3, beam_size, 6))
    chex.assert_shape(scores, (3, beam_size))
    self.assertTrue(np.isfinite(scores).all())
    _check_invariants(self, seqs, scores,
                      _rescore(model, rows, seqs, length_alpha))

  @parameterized.parameters(
      (5, 3, 36, 0.0, True), (4, 4, 24, 1.0, True), (4, 4, 24, 0.5, False))
  def test_exhaustive_beam_finds_brute_force_ranking(
      self, vocab_size, max_len, beam_size, length_alpha, with_eos):
    # beam_size >= every step's extensions, so nothing is ever pruned.
    model = _rnn_model(2, vocab_size,
                       eos_logit=None if with_eos else float('-inf'))
    rows = [0, 1]
    seqs, scores = _run(model, rows, beam_size=beam_size, max_len=max_len,
                        length_alpha=length_alpha)
    for b in rows:
      want_seqs, want_scores = _brute_force(
          model, b, vocab_size, max_len, length_alpha, with_eos)
      n = len(want_scores)
      self.assertLessEqual(n, beam_size)
      np.testing.assert_array_equal(seqs[b, :n], want_seqs)
      np.testing.assert_allclose(scores[b, :n], want_scores, rtol=1e-5)
      np.testing.assert_array_equal(scores[b, n:], -np.inf)
      np.testing.assert_array_equal(seqs[b, n:], PAD)

  def test_known_optimum_where_greedy_is_suboptimal(self):
    probs = np.zeros((2, 5, 5))
    # Row 0: greedy takes A (0.6) and ends [A, EOS] = 0.24; [B, EOS] = 0.36.
    probs[0, BOS, [A, B]] = [0.6, 0.4]
    probs[0, A, [EOS, A, B]] = [0.4, 0.3, 0.3]
    probs[0, B, [EOS, A, B]] = [0.9, 0.05, 0.05]
    # Row 1: greedy is optimal: [A, EOS] = 0.63, then [B, EOS] = 0.15.
    probs[1, BOS, [A, B]] = [0.7, 0.3]
    probs[1, A, [EOS, A, B]] = [0.9, 0.05, 0.05]
    probs[1, B, [EOS, A, B]] = [0.5, 0.25, 0.25]
    model = _markov_model(probs)
    seqs, scores = _run(model, [0, 1], beam_size=1, max_len=4)
    np.testing.assert_array_equal(
        seqs, [[[A, EOS, PAD, PAD]], [[A, EOS, PAD, PAD]]])
    np.testing.assert_allclose(scores, np.log([[0.24], [0.63]]), rtol=1e-6)
    seqs, scores = _run(model, [0, 1], beam_size=2, max_len=4)
    np.testing.assert_array_equal(
        seqs, [[[B, EOS, PAD, PAD], [A, EOS, PAD, PAD]],
               [[A, EOS, PAD, PAD], [B, EOS, PAD, PAD]]])
    np.testing.assert_allclose(
        scores, np.log([[0.36, 0.24], [0.63, 0.15]]), rtol=1e-6)

  def test_eos_as_most_likely_first_token(self):
    probs = np.zeros((1, 5, 5))
    probs[0, BOS, [EOS, A, B]] = [0.5, 0.3, 0.2]
    probs[0, A, [EOS, A, B]] = [0.5, 0.25, 0.25]
    probs[0, B, [EOS, A, B]] = [0.5, 0.25, 0.25]
    seqs, scores = _run(_markov_model(probs), [0], beam_size=3, max_len=4,
                        length_alpha=1.0)
    np.testing.assert_array_equal(
        seqs[0], [[EOS, PAD, PAD, PAD], [A, EOS, PAD, PAD],
                  [B, EOS, PAD, PAD]])
    np.testing.assert_allclose(
        scores[0], np.log([0.5, 0.15, 0.1]) / np.array([6, 7, 7]) * 6,
        rtol=1e-6)

  def test_early_stop_bound_accounts_for_length_penalty(self):
    # [EOS] (0.55) finishes first; with alpha = 1 the live A scores at most
    # log(0.45) / ((5 + 8) / 6) > log(0.55), so the search must go on, and
    # [A x 6, EOS] (0.45 * 0.98**6) wins after normalization.
    probs = np.zeros((1, 7, 5, 5))
    probs[0, 0, BOS, [EOS, A]] = [0.55, 0.45]
    probs[0, 1:6, A, A], probs[0, 1:6, A, EOS] = 0.98, 0.02
    probs[0, 6, A, [EOS, A]] = [0.98, 0.02]
    seqs, scores = _run(_markov_model(probs), [0], beam_size=1, max_len=8,
                        length_alpha=1.0)
    np.testing.assert_array_equal(seqs[0, 0], [A] * 6 + [EOS, PAD])
    np.testing.assert_allclose(
        scores[0, 0], np.log(0.45 * 0.98**6) / (12 / 6), rtol=1e-5)
    self.assertGreater(scores[0, 0], np.log(0.55))

  def test_row_decodes_the_same_alone_and_in_a_batch(self):
    model = _rnn_model(3, 7)
    kwargs = dict(beam_size=3, max_len=6, length_alpha=0.6)
    seqs, scores = _run(model, range(5), **kwargs)
    self.assertLen(set(map(tuple, scores)), 5)  # the rows differ
    for b in (0, 3):
      seqs_b, scores_b = _run(model, [b], **kwargs)
      np.testing.assert_array_equal(seqs_b[0], seqs[b])
      np.testing.assert_allclose(scores_b[0], scores[b], rtol=1e-6)

  def test_beam_wider_than_vocab(self):
    model = _rnn_model(4, 4)  # PAD, EOS, BOS and one more token
    rows = range(2)
    seqs, scores = _run(model, rows, beam_size=10, max_len=3,
                        length_alpha=0.5)
    self.assertTrue(np.isfinite(scores[:, 0]).all())
    self.assertTrue(np.isneginf(scores[:, -1]).all())
    _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, 0.5))

  @parameterized.parameters(float('-inf'), -1e9)
  def test_max_len_cut_off_returns_live_hypotheses(self, eos_logit):
    model = _rnn_model(5, 7, eos_logit=eos_logit)
    rows = range(3)
    seqs, scores = _run(model, rows, beam_size=3, max_len=4, length_alpha=1.0)
    self.assertTrue(np.isfinite(scores).all())
    self.assertNotIn(EOS, seqs)
    self.assertNotIn(PAD, seqs)
    # Rescoring uses |y| = max_len for sequences without EOS.
    _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, 1.0))

  def test_jitted_search_traces_once(self):
    chex.clear_trace_counter()
    step_fn, init_state = _rnn_model(6, 6)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def search(state):
      return decode.beam_search(step_fn, state, batch_size=2, beam_size=3,
                                max_len=5, bos_id=BOS, eos_id=EOS, pad_id=PAD)

    first = search(init_state([0, 1]))
    second = search(init_state([2, 3]))
    search(init_state([4, 5]))
    self.assertFalse(np.array_equal(first[0], second[0]))

  def test_expand_to_beams_repeats_rows(self):
    tree = {'x': jnp.arange(6).reshape(2, 3), 'y': jnp.array([7, 8])}
    out = decode.expand_to_beams(tree, 2)
    np.testing.assert_array_equal(out['x'], [[0, 1, 2], [0, 1, 2],
                                             [3, 4, 5], [3, 4, 5]])
    np.testing.assert_array_equal(out['y'], [7, 7, 8, 8])

  def test_bad_arguments_raise(self):
    step_fn, init_state = _rnn_model(0, 7)
    kwargs = dict(beam_size=2, max_len=3, bos_id=BOS, eos_id=EOS)
    with self.assertRaisesRegex(ValueError, 'leading dimension'):
      decode.beam_search(step_fn, init_state([0, 1]), batch_size=3, **kwargs)
    with self.assertRaisesRegex(ValueError, 'must differ'):
      decode.beam_search(step_fn, init_state([0]), batch_size=1,
                         pad_id=EOS, **kwargs)

  @given(batch_size=st.integers(1, 3), beam_size=st.integers(1, 6),
         vocab_size=st.integers(3, 8), max_len=st.integers(1, 5),
         length_alpha=st.sampled_from([0.0, 0.6, 1.0, 2.0]),
         seed=st.integers(0, 2**16))
  def test_properties(self, batch_size, beam_size, vocab_size, max_len,
                      length_alpha, seed):
    model = _rnn_model(seed, vocab_size)
    rows = range(batch_size)
    seqs, scores = _run(model, rows, beam_size=beam_size, max_len=max_len,
                        length_alpha=length_alpha)
    chex.assert_shape(seqs, (batch_size, beam_size, max_len))
    self.assertTrue(np.isfinite(scores[:, 0]).all())
    _check_invariants(self, seqs, scores,
                      _rescore(model, rows, seqs, length_alpha))


if __name__ == '__main__':
  absltest.main()
