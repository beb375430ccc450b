"""Tests for s2s_jax.decode (beam search; greedy is beam 1)."""

# pylint: disable=invalid-name
import dataclasses
import functools
import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import decode
from s2s_jax import sampling
from s2s_jax import search_ops

jax.config.update('jax_numpy_rank_promotion', 'raise')

# The decoder takes its ids as arguments; these toy ids deliberately differ
# from the project's (PAD=0, BOS=2, EOS=3) so nothing can depend on them.
PAD, EOS, BOS = 0, 1, 2
A, B = 3, 4  # the real tokens of the hand-built Markov chains
MAX_ROWS = 8  # batch rows a toy model has initial states for
MAX_STEPS = 8  # steps a toy model has position biases for


@functools.cache
def _rnn_model(
  seed: int, vocab_size: int, logits_dtype: str = 'float32', eos_logit: float | None = None, hidden: int = 8
):
  """A tiny random RNN; returns (step_fn, init_state(rows))."""
  rng = np.random.default_rng(seed)
  emb_VxH = jnp.asarray(rng.normal(size=(vocab_size, hidden)), jnp.float32)
  w_HxH = jnp.asarray(rng.normal(size=(hidden, hidden)) / np.sqrt(hidden), jnp.float32)
  out_HxV = jnp.asarray(1.5 * rng.normal(size=(hidden, vocab_size)), jnp.float32)
  pos_bias_TxV = jnp.asarray(rng.normal(size=(MAX_STEPS, vocab_size)), jnp.float32)
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
    return {'h': jnp.asarray(init_h[rows]), 'count': jnp.zeros((len(rows),), jnp.int32)}

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
    return {'table': jnp.asarray(rows, jnp.int32), 'step': jnp.zeros((len(rows),), jnp.int32)}

  return step_fn, init_state


# DecodeOptions fields; the search's batch_size is its own argument (the rows of init_state), not the option's.
_SETTINGS = {f.name for f in dataclasses.fields(decode.DecodeOptions)} - {'batch_size'}


def _options(**settings) -> decode.DecodeOptions:
  """DecodeOptions with no length penalty unless given (the plain search these tests check against)."""
  return decode.DecodeOptions(**({'length_alpha': 0.0} | settings))


@functools.cache
def _decoder(step_fn, fn=decode.beam_search, **kwargs):
  """One jitted decoder per (model, function, static configuration); `kwargs` holds DecodeOptions fields and the
  search's other static arguments."""
  options = _options(**{k: v for k, v in kwargs.items() if k in _SETTINGS})
  kwargs = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD) | {k: v for k, v in kwargs.items() if k not in _SETTINGS}
  return jax.jit(lambda state, traced: fn(step_fn, state, options=options, **traced, **kwargs))


def _run(model, rows, fn=decode.beam_search, traced=None, **kwargs):
  """Decodes `rows`; `traced` holds the non-static arguments (rng, masks)."""
  step_fn, init_state = model
  out = _decoder(step_fn, fn, batch_size=len(rows), **kwargs)(init_state(rows), traced or {})
  return jax.tree.map(np.asarray, out)


def _lengths(seqs_MxT: np.ndarray) -> np.ndarray:
  """|y|: up to and including the first EOS, else the full length."""
  is_eos = seqs_MxT == EOS
  return np.where(is_eos.any(-1), is_eos.argmax(-1) + 1, seqs_MxT.shape[-1])


@functools.partial(jax.jit, static_argnums=0)
def _teacher_forced(step_fn, state, seqs_NxT):
  """Per-step log-probs [N, T, V] and attention outputs [N, T, S] (or None)."""
  ids_N = jnp.full(seqs_NxT.shape[:1], BOS, jnp.int32)
  logp_T, attn_T = [], []
  for t in range(seqs_NxT.shape[1]):
    out = step_fn(ids_N, state)
    logits_NxV, state = out[:2]
    logp_T.append(jax.nn.log_softmax(logits_NxV.astype(jnp.float32)))
    if len(out) == 3:
      attn_T.append(out[2]['attention'])
    ids_N = seqs_NxT[:, t]
  return jnp.stack(logp_T, axis=1), (jnp.stack(attn_T, 1) if attn_T else None)


def _teacher_force(model, rows, seqs_BxKxT: np.ndarray):
  """Teacher-forces step_fn along each sequence.

  Returns:
    (log-prob sums up to |y| [B, K], |y| [B, K], per-step log-probs
    [B, K, T, V], attention outputs [B, K, T, S] or None).
  """
  step_fn, init_state = model
  batch_size, beam_size, max_len = seqs_BxKxT.shape
  seqs_NxT = seqs_BxKxT.reshape(-1, max_len)
  lengths_N = _lengths(seqs_NxT)
  state = decode.expand_to_beams(init_state(rows), beam_size)
  logp_NxTxV, attn_NxTxS = jax.device_get(_teacher_forced(step_fn, state, jnp.asarray(seqs_NxT)))
  logp_NxT = np.take_along_axis(logp_NxTxV, seqs_NxT[..., None], 2)[..., 0]
  # A float32 running sum, like the decoder's.
  cumsum_NxT = np.cumsum(logp_NxT, axis=1, dtype=np.float32)
  total_N = cumsum_NxT[np.arange(len(lengths_N)), lengths_N - 1]
  shape = (batch_size, beam_size)
  return (
    total_N.reshape(shape),
    lengths_N.reshape(shape),
    logp_NxTxV.reshape(shape + logp_NxTxV.shape[1:]),
    None if attn_NxTxS is None else attn_NxTxS.reshape(shape + attn_NxTxS.shape[1:]),
  )


def _rescore(model, rows, seqs_BxKxT: np.ndarray, alpha: float) -> np.ndarray:
  """Teacher-forces step_fn along each sequence; returns normalized scores."""
  total_BxK, lengths_BxK, _, _ = _teacher_force(model, rows, seqs_BxKxT)
  return total_BxK / ((5.0 + lengths_BxK) / 6.0) ** alpha


def _greedy(model, rows, max_len):
  """Reference argmax chain, PAD excluded, stopping at EOS."""
  step_fn, init_state = model
  state = init_state(rows)
  ids = np.full((len(rows),), BOS, np.int32)
  seqs = np.full((len(rows), max_len), PAD, np.int32)
  alive = np.ones((len(rows),), bool)
  for t in range(max_len):
    logits, state = step_fn(jnp.asarray(ids), state)[:2]
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
    seqs = [
      p + (EOS,) + (PAD,) * (max_len - n - 1) for n in range(max_len) for p in itertools.product(tokens, repeat=n)
    ]
  else:
    seqs = list(itertools.product(tokens, repeat=max_len))
  seqs_1xMxT = np.asarray(seqs, np.int32)[None]
  scores_M = _rescore(model, [row], seqs_1xMxT, alpha)[0]
  order = np.argsort(-scores_M, kind='stable')
  return seqs_1xMxT[0][order], scores_M[order]


def _check_invariants(test, seqs_BxKxT, scores_BxK, expected_BxK):
  """Shared properties of any beam-search output."""
  test.assertFalse(np.isnan(scores_BxK).any())
  np.testing.assert_array_equal(scores_BxK, -np.sort(-scores_BxK, axis=1), err_msg='not best first')
  finite = np.isfinite(scores_BxK)
  np.testing.assert_allclose(scores_BxK[finite], expected_BxK[finite], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(seqs_BxKxT[~finite], PAD)
  for seq, ok in zip(seqs_BxKxT.reshape(-1, seqs_BxKxT.shape[-1]), finite.reshape(-1)):
    if not ok:
      continue
    length = _lengths(seq[None])[0]
    test.assertNotIn(PAD, seq[:length], msg=f'PAD inside {seq}')
    test.assertNotIn(EOS, seq[: length - 1], msg=f'EOS before end of {seq}')
    np.testing.assert_array_equal(seq[length:], PAD, err_msg=str(seq))
  for b in range(seqs_BxKxT.shape[0]):
    hyps = [tuple(s) for s, ok in zip(seqs_BxKxT[b], finite[b]) if ok]
    test.assertLen(set(hyps), len(hyps), msg=f'duplicates in row {b}')


SRC_LENGTHS = np.array([4, 2, 3, 1, 4, 2, 3, 1])  # real source positions


@functools.cache
def _state_model(vocab_size: int, src_len: int = 0, eos_bias: float = 0.0, repeat_bias: float = 0.0, hidden: int = 8):
  """A tiny random RNN whose weights ride in its state.

  One jitted decoder then serves every seed. With `src_len > 0` it attends
  over per-row random keys and returns the weights as its auxiliary output
  {'attention': [N, S]}; the attention leaks onto source padding on purpose
  (the decoder must zero it).

  Returns:
    (step_fn, make_init(seed) -> init_state(rows)).
  """

  def step_fn(ids_N, state):
    rows_N = jnp.arange(ids_N.shape[0])
    h_NxH = jnp.tanh(state['emb'][rows_N, ids_N] + jnp.einsum('nh,nhg->ng', state['h'], state['w']))
    logits_NxV = jnp.einsum('nh,nhv->nv', h_NxH, state['out'])
    logits_NxV += repeat_bias * jax.nn.one_hot(ids_N, vocab_size)
    new_state = dict(state, h=h_NxH)
    if src_len:
      attn_NxS = jax.nn.softmax(jnp.einsum('nh,nsh->ns', h_NxH, state['keys']), axis=-1)
      logits_NxV += jnp.einsum('ns,nsv->nv', attn_NxS, state['values'])
      return (logits_NxV.at[:, EOS].add(eos_bias), new_state, {'attention': attn_NxS})
    return logits_NxV.at[:, EOS].add(eos_bias), new_state

  def make_init(seed):
    rng = np.random.default_rng(seed)
    shared = {
      'emb': rng.normal(size=(vocab_size, hidden)),
      'w': rng.normal(size=(hidden, hidden)) / np.sqrt(hidden),
      'out': 1.5 * rng.normal(size=(hidden, vocab_size)),
    }
    per_row = {'h': rng.normal(size=(MAX_ROWS, hidden))}
    if src_len:
      per_row.update(
        keys=2 * rng.normal(size=(MAX_ROWS, src_len, hidden)),
        values=2 * rng.normal(size=(MAX_ROWS, src_len, vocab_size)),
      )

    def init_state(rows):
      rows = list(rows)
      state = {k: np.broadcast_to(v, (len(rows),) + v.shape) for k, v in shared.items()}
      state.update({k: v[rows] for k, v in per_row.items()})
      return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), state)

    return init_state

  return step_fn, make_init


def _source_mask(rows, src_len: int) -> jnp.ndarray:
  """[B, S] float32: 1 on the first SRC_LENGTHS[row] positions."""
  lengths_Bx1 = np.minimum(SRC_LENGTHS[list(rows)], src_len)[:, None]
  return jnp.asarray(np.arange(src_len)[None] < lengths_Bx1, jnp.float32)


def _with_attention(model, attn_VxS: np.ndarray):
  """Adds an auxiliary 'attention' output that depends only on the input."""
  step_fn, init_state = model
  attn_VxS = jnp.asarray(attn_VxS, jnp.float32)

  def attn_step_fn(ids_N, state):
    logits_NxV, new_state = step_fn(ids_N, state)[:2]
    return logits_NxV, new_state, {'attention': attn_VxS[ids_N]}

  return attn_step_fn, init_state


def _coverage_penalty(attn_BxKxTxS, mask_BxS, beta):
  """GNMT cp in numpy from per-token attention (1e-6 floor, as documented)."""
  cov_BxKxS = attn_BxKxTxS.sum(axis=2)
  log_BxKxS = np.log(np.clip(cov_BxKxS, 1e-6, 1.0))
  return beta * (log_BxKxS * np.asarray(mask_BxS)[:, None]).sum(-1)


def _repeats_ngram(seq, n: int) -> bool:
  """Whether seq (cut at |y|, EOS included) holds some n-gram twice."""
  toks = list(seq[: _lengths(seq[None])[0]])
  grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
  return len(set(grams)) < len(grams)


class BeamSearchTest(parameterized.TestCase):
  @parameterized.parameters('float32', 'bfloat16')
  def test_beam_one_is_the_argmax_chain(self, logits_dtype):
    model = _rnn_model(0, 7, logits_dtype)
    rows = range(6)
    seqs, scores = _run(model, rows, beam_size=1, max_len=7)
    np.testing.assert_array_equal(seqs[:, 0], _greedy(model, rows, 7))
    self.assertTrue((_lengths(seqs[:, 0]) < 7).any())  # some rows finished
    np.testing.assert_allclose(scores, _rescore(model, rows, seqs, 0.0), rtol=1e-5, atol=1e-5)

  @parameterized.product(beam_size=[1, 3, 5], length_alpha=[0.0, 0.7])
  def test_scores_equal_teacher_forced_rescoring(self, beam_size, length_alpha):
    model = _rnn_model(1, 6)
    rows = range(3)
    seqs, scores = _run(model, rows, beam_size=beam_size, max_len=6, length_alpha=length_alpha)
    self.assertEqual((seqs.dtype, scores.dtype), (np.int32, np.float32))
    chex.assert_shape(seqs, (3, beam_size, 6))
    chex.assert_shape(scores, (3, beam_size))
    self.assertTrue(np.isfinite(scores).all())
    _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, length_alpha))

  @parameterized.parameters((5, 3, 36, 0.0, True), (4, 4, 24, 1.0, True), (4, 4, 24, 0.5, False))
  def test_exhaustive_beam_finds_brute_force_ranking(self, vocab_size, max_len, beam_size, length_alpha, with_eos):
    # beam_size >= every step's extensions, so nothing is ever pruned.
    model = _rnn_model(2, vocab_size, eos_logit=None if with_eos else float('-inf'))
    rows = [0, 1]
    seqs, scores = _run(model, rows, beam_size=beam_size, max_len=max_len, length_alpha=length_alpha)
    for b in rows:
      want_seqs, want_scores = _brute_force(model, b, vocab_size, max_len, length_alpha, with_eos)
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
    np.testing.assert_array_equal(seqs, [[[A, EOS, PAD, PAD]], [[A, EOS, PAD, PAD]]])
    np.testing.assert_allclose(scores, np.log([[0.24], [0.63]]), rtol=1e-6)
    seqs, scores = _run(model, [0, 1], beam_size=2, max_len=4)
    np.testing.assert_array_equal(
      seqs, [[[B, EOS, PAD, PAD], [A, EOS, PAD, PAD]], [[A, EOS, PAD, PAD], [B, EOS, PAD, PAD]]]
    )
    np.testing.assert_allclose(scores, np.log([[0.36, 0.24], [0.63, 0.15]]), rtol=1e-6)

  def test_eos_as_most_likely_first_token(self):
    probs = np.zeros((1, 5, 5))
    probs[0, BOS, [EOS, A, B]] = [0.5, 0.3, 0.2]
    probs[0, A, [EOS, A, B]] = [0.5, 0.25, 0.25]
    probs[0, B, [EOS, A, B]] = [0.5, 0.25, 0.25]
    seqs, scores = _run(_markov_model(probs), [0], beam_size=3, max_len=4, length_alpha=1.0)
    np.testing.assert_array_equal(seqs[0], [[EOS, PAD, PAD, PAD], [A, EOS, PAD, PAD], [B, EOS, PAD, PAD]])
    np.testing.assert_allclose(scores[0], np.log([0.5, 0.15, 0.1]) / np.array([6, 7, 7]) * 6, rtol=1e-6)

  def test_early_stop_bound_accounts_for_length_penalty(self):
    # [EOS] (0.55) finishes first; with alpha = 1 the live A scores at most
    # log(0.45) / ((5 + 8) / 6) > log(0.55), so the search must go on, and
    # [A x 6, EOS] (0.45 * 0.98**6) wins after normalization.
    probs = np.zeros((1, 7, 5, 5))
    probs[0, 0, BOS, [EOS, A]] = [0.55, 0.45]
    probs[0, 1:6, A, A], probs[0, 1:6, A, EOS] = 0.98, 0.02
    probs[0, 6, A, [EOS, A]] = [0.98, 0.02]
    seqs, scores = _run(_markov_model(probs), [0], beam_size=1, max_len=8, length_alpha=1.0)
    np.testing.assert_array_equal(seqs[0, 0], [A] * 6 + [EOS, PAD])
    np.testing.assert_allclose(scores[0, 0], np.log(0.45 * 0.98**6) / (12 / 6), rtol=1e-5)
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
    seqs, scores = _run(model, rows, beam_size=10, max_len=3, length_alpha=0.5)
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
      return decode.beam_search(
        step_fn, state, _options(beam_size=3, max_len=5), batch_size=2, bos_id=BOS, eos_id=EOS, pad_id=PAD
      )

    first = search(init_state([0, 1]))
    second = search(init_state([2, 3]))
    search(init_state([4, 5]))
    self.assertFalse(np.array_equal(first[0], second[0]))

  def test_expand_to_beams_repeats_rows(self):
    tree = {'x': jnp.arange(6).reshape(2, 3), 'y': jnp.array([7, 8])}
    out = decode.expand_to_beams(tree, 2)
    np.testing.assert_array_equal(out['x'], [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]])
    np.testing.assert_array_equal(out['y'], [7, 7, 8, 8])

  def test_bad_arguments_raise(self):
    step_fn, init_state = _rnn_model(0, 7)
    options, ids = _options(beam_size=2, max_len=3), dict(bos_id=BOS, eos_id=EOS)
    with self.assertRaisesRegex(ValueError, 'leading dimension'):
      decode.beam_search(step_fn, init_state([0, 1]), options, batch_size=3, **ids)
    with self.assertRaisesRegex(ValueError, 'must differ'):
      decode.beam_search(step_fn, init_state([0]), options, batch_size=1, pad_id=EOS, **ids)
    state = init_state([0])
    for bad, message in [
      (dict(min_len=3), 'min_len'),
      (dict(min_len=-1), 'min_len'),
      (dict(no_repeat_ngram_size=-1), 'no_repeat_ngram_size'),
      (dict(coverage_beta=-0.1), 'coverage_beta'),
      (dict(coverage_beta=0.2), 'source_mask'),
      (dict(return_attention=True), 'source_mask'),
      (
        dict(coverage_beta=0.2, source_mask=jnp.ones((1, 4))),
        r"step function returning \(logits, state, \{'attention'",
      ),
      (dict(row_max_len=jnp.ones((2,), jnp.int32)), 'row_max_len'),
    ]:
      settings = {k: v for k, v in bad.items() if k in _SETTINGS}
      arrays = {k: v for k, v in bad.items() if k not in _SETTINGS}
      with self.assertRaisesRegex(ValueError, message):
        decode.beam_search(step_fn, state, dataclasses.replace(options, **settings), batch_size=1, **ids, **arrays)

  @given(
    batch_size=st.integers(1, 3),
    beam_size=st.integers(1, 6),
    vocab_size=st.integers(3, 8),
    max_len=st.integers(1, 5),
    length_alpha=st.sampled_from([0.0, 0.6, 1.0, 2.0]),
    seed=st.integers(0, 2**16),
  )
  def test_properties(self, batch_size, beam_size, vocab_size, max_len, length_alpha, seed):
    model = _rnn_model(seed, vocab_size)
    rows = range(batch_size)
    seqs, scores = _run(model, rows, beam_size=beam_size, max_len=max_len, length_alpha=length_alpha)
    chex.assert_shape(seqs, (batch_size, beam_size, max_len))
    self.assertTrue(np.isfinite(scores[:, 0]).all())
    # The K-best list: distinct, best first, every score the model's own.
    _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, length_alpha))
    # Its first entry is what a 1-best reader of the same search gets: the
    # highest-scoring hypothesis of the list.
    best = scores.argmax(axis=1)
    np.testing.assert_array_equal(scores[:, 0], scores.max(axis=1))
    np.testing.assert_array_equal(seqs[:, 0], seqs[np.arange(batch_size), best])


class BeamOptionsTest(parameterized.TestCase):
  """min_len, row_max_len, n-gram blocking, coverage and return_attention."""

  @parameterized.parameters(0, 1, 2)
  def test_exhaustive_beam_top_is_brute_force_and_beats_greedy(self, seed):
    # Finished hypotheses only: a row that never finishes returns live ones,
    # which brute force over finished outputs does not rank.
    model = _state_model(5, eos_bias=1.0)
    model = (model[0], model[1](seed))
    rows = range(4)
    top = {}
    for beam_size in (1, 2, 4, 36):  # 36: nothing is ever pruned
      seqs, scores = _run(model, rows, beam_size=beam_size, max_len=3)
      top[beam_size] = np.where((seqs[:, 0] == EOS).any(-1), scores[:, 0], np.nan)
    for b in rows:
      want_seqs, want_scores = _brute_force(model, b, 5, 3, 0.0, True)
      np.testing.assert_allclose(top[36][b], want_scores[0], rtol=1e-5)
      for beam_size in (1, 2, 4):
        self.assertFalse(top[beam_size][b] > want_scores[0] + 1e-5)
    finished = np.isfinite(top[1])
    self.assertTrue(finished.any())
    self.assertTrue((top[36][finished] >= top[1][finished] - 1e-6).all())

  def test_min_len(self):
    model = _state_model(7, eos_bias=8.0)  # prefers EOS at once
    model = (model[0], model[1](0))
    rows = range(3)
    seqs, _ = _run(model, rows, beam_size=3, max_len=6, length_alpha=0.6)
    self.assertTrue((_lengths(seqs[:, 0]) == 1).all())  # the unmasked case
    for min_len in (1, 2, 4):
      seqs, scores = _run(model, rows, beam_size=3, max_len=6, length_alpha=0.6, min_len=min_len)
      self.assertTrue(np.isfinite(scores).all())
      self.assertTrue((_lengths(seqs.reshape(-1, 6)) >= min_len + 1).all())
      self.assertTrue((_lengths(seqs[:, 0]) == min_len + 1).all())
      _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, 0.6))

  def test_row_max_len(self):
    model = _state_model(7, eos_bias=-2.0)  # would rather go on
    model = (model[0], model[1](1))
    rows = range(6)
    kwargs = dict(beam_size=3, max_len=6, length_alpha=0.6)
    plain_seqs, plain_scores = _run(model, rows, **kwargs)
    self.assertTrue((_lengths(plain_seqs[:, 0]) > 3).any())
    limits = np.array([0, 1, 2, 4, 6, 9], np.int32)  # 0 -> 1, 9 -> 6
    seqs, scores = _run(model, rows, traced=dict(row_max_len=limits), **kwargs)
    _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, 0.6))
    clipped = np.clip(limits, 1, 6)
    for b in rows:
      finite = np.isfinite(scores[b])
      self.assertTrue(finite[0])
      lengths = _lengths(seqs[b][finite])
      self.assertTrue((lengths <= clipped[b]).all(), msg=f'row {b}')
      if clipped[b] < 6:
        self.assertTrue((seqs[b][finite, lengths - 1] == EOS).all())
    np.testing.assert_array_equal(seqs[:2, 0], [[EOS] + [PAD] * 5] * 2)
    np.testing.assert_array_equal(seqs[4:], plain_seqs[4:])
    np.testing.assert_array_equal(scores[4:], plain_scores[4:])
    same_seqs, same_scores = _run(model, rows, traced=dict(row_max_len=np.full((6,), 6, np.int32)), **kwargs)
    np.testing.assert_array_equal(same_seqs, plain_seqs)
    np.testing.assert_array_equal(same_scores, plain_scores)

  @parameterized.parameters(1, 2, 3)
  def test_no_repeat_ngram(self, n):
    model = _state_model(7, eos_bias=-3.0, repeat_bias=4.0)  # loves repeats
    model = (model[0], model[1](2))
    rows = range(3)
    kwargs = dict(beam_size=3, max_len=8, length_alpha=0.6)
    seqs, _ = _run(model, rows, **kwargs)
    self.assertTrue(any(_repeats_ngram(s, n) for s in seqs.reshape(-1, 8)))
    seqs, scores = _run(model, rows, no_repeat_ngram_size=n, **kwargs)
    self.assertTrue(np.isfinite(scores[:, 0]).all())
    for seq, score in zip(seqs.reshape(-1, 8), scores.reshape(-1)):
      if np.isfinite(score):
        self.assertFalse(_repeats_ngram(seq, n), msg=f'{n}-gram in {seq}')
    _check_invariants(self, seqs, scores, _rescore(model, rows, seqs, 0.6))

  def test_ngram_mask_bans_exactly_the_repeating_tokens(self):
    seqs_1x1xT = jnp.asarray([[[3, 4, 3, 5, 3, 4, 0, 0]]], jnp.int32)
    for n, t, banned in [
      (1, 3, {3, 4}),
      (2, 5, {4, 5}),
      (2, 6, {3}),
      (3, 5, set()),
      (3, 6, {3}),
      (2, 1, set()),
      (3, 2, set()),
      (9, 6, set()),
    ]:
      mask = search_ops.repeated_ngram_mask(seqs_1x1xT, jnp.int32(t), n, 7)
      self.assertEqual(set(np.flatnonzero(np.asarray(mask[0, 0]))), banned, msg=f'n={n}, t={t}')

  def _check_aux(self, model, rows, seqs, scores, attn, mask, alpha, beta):
    """Checks attention and scores against teacher forcing.

    The attention must be the teacher-forced leaf, zero after EOS, on source
    padding and in empty slots; scores must be logp / lp + cp from it.
    """
    total, lengths, _, want_attn = _teacher_force(model, rows, seqs)
    max_len = seqs.shape[-1]
    alive_BxKxT = np.arange(max_len) < lengths[..., None]
    alive_BxKxT &= np.isfinite(scores)[..., None]
    want_attn = np.where(alive_BxKxT[..., None], want_attn * np.asarray(mask)[:, None, None], 0.0)
    np.testing.assert_allclose(attn, want_attn, atol=1e-6)
    pad_BxS = np.asarray(mask) == 0
    self.assertTrue((attn.transpose(0, 3, 1, 2)[pad_BxS] == 0).all())
    expected = total / ((5.0 + lengths) / 6.0) ** alpha + _coverage_penalty(attn, mask, beta)
    _check_invariants(self, seqs, scores, expected)

  @parameterized.parameters((6, 4, 5, 0.0), (6, 3, 4, float('-inf')), (4, 10, 3, 0.0))
  def test_return_aux_attention(self, vocab_size, beam_size, max_len, eos_bias):
    # Ordinary rows; rows that never finish (fallback); empty -inf slots.
    model = _state_model(vocab_size, src_len=4, eos_bias=eos_bias)
    model = (model[0], model[1](3))
    rows = range(4)
    mask = _source_mask(rows, 4)
    kwargs = dict(beam_size=beam_size, max_len=max_len, length_alpha=0.6)
    seqs, scores, aux = _run(model, rows, return_attention=True, traced=dict(source_mask=mask), **kwargs)
    attn = aux['attention']
    self.assertEqual(attn.dtype, np.float32)
    chex.assert_shape(attn, (4, beam_size, max_len, 4))
    self.assertGreater(np.abs(attn).sum(), 0)
    self._check_aux(model, rows, seqs, scores, attn, mask, 0.6, 0.0)
    plain = _run(model, rows, **kwargs)
    np.testing.assert_array_equal(seqs, plain[0])
    np.testing.assert_array_equal(scores, plain[1])

  @parameterized.parameters(0.0, float('-inf'))
  def test_coverage_scores_match_recomputation(self, eos_bias):
    model = _state_model(6, src_len=4, eos_bias=eos_bias)
    model = (model[0], model[1](4))
    rows = range(4)
    mask = _source_mask(rows, 4)
    kwargs = dict(beam_size=3, max_len=5, length_alpha=0.6)
    seqs, scores, aux = _run(
      model, rows, return_attention=True, coverage_beta=0.4, traced=dict(source_mask=mask), **kwargs
    )
    cp = _coverage_penalty(aux['attention'], mask, 0.4)
    self.assertTrue((cp[np.isfinite(scores)] < -1e-3).any())
    self._check_aux(model, rows, seqs, scores, aux['attention'], mask, 0.6, 0.4)
    # beta = 0 is no coverage at all, even with a source mask given.
    plain = _run(model, rows, **kwargs)
    zero = _run(model, rows, coverage_beta=0.0, traced=dict(source_mask=mask), **kwargs)
    np.testing.assert_array_equal(zero[0], plain[0])
    np.testing.assert_array_equal(zero[1], plain[1])

  def test_coverage_reranks_towards_covering_hypotheses(self):
    probs = np.zeros((1, 5, 5))
    probs[0, BOS, [A, B]] = [0.6, 0.4]
    probs[0, [A, B], EOS] = 1.0
    attn_VxS = np.zeros((5, 2))
    attn_VxS[[BOS, A], 0] = 1.0  # [A, EOS] attends position 0 twice
    attn_VxS[B, 1] = 1.0  # [B, EOS] attends both positions
    model = _with_attention(_markov_model(probs), attn_VxS)
    traced = dict(source_mask=jnp.ones((1, 2)))
    kwargs = dict(beam_size=2, max_len=3, return_attention=True, traced=traced)
    seqs, scores, _ = _run(model, [0], coverage_beta=0.0, **kwargs)
    np.testing.assert_array_equal(seqs[0, :, 0], [A, B])
    np.testing.assert_allclose(scores[0], np.log([0.6, 0.4]), rtol=1e-6)
    seqs, scores, aux = _run(model, [0], coverage_beta=0.1, **kwargs)
    np.testing.assert_array_equal(seqs[0, :, 0], [B, A])
    np.testing.assert_allclose(scores[0], [np.log(0.4), np.log(0.6) + 0.1 * np.log(1e-6)], rtol=1e-5)
    np.testing.assert_array_equal(aux['attention'][0, :, :2], [[[1, 0], [0, 1]], [[1, 0], [1, 0]]])

  def test_new_options_trace_once(self):
    chex.clear_trace_counter()
    step_fn, make_init = _state_model(7, src_len=4)
    init_state = make_init(5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def search(state, row_max_len, source_mask):
      options = decode.DecodeOptions(
        beam_size=3,
        max_len=5,
        length_alpha=0.6,
        min_len=1,
        no_repeat_ngram_size=2,
        coverage_beta=0.3,
        return_attention=True,
      )
      return decode.beam_search(
        step_fn,
        state,
        options,
        batch_size=2,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        row_max_len=row_max_len,
        source_mask=source_mask,
      )

    outs = [
      search(init_state(rows), jnp.asarray(limits, jnp.int32), _source_mask(rows, 4))
      for rows, limits in [([0, 1], [3, 5]), ([2, 3], [5, 2]), ([4, 5], [4, 4])]
    ]
    seqs, scores, aux = outs[0]
    self.assertEqual((seqs.dtype, scores.dtype, aux['attention'].dtype), (jnp.int32, jnp.float32, jnp.float32))
    chex.assert_shape([seqs, scores, aux['attention']], [(2, 3, 5), (2, 3), (2, 3, 5, 4)])
    self.assertFalse(np.array_equal(outs[0][0], outs[1][0]))


class SampleTest(parameterized.TestCase):
  @given(seed=st.integers(0, 2**16))
  @settings(derandomize=True)  # a near-tie could flip a draw at T = 1e-4
  def test_near_zero_temperature_is_greedy(self, seed):
    step_fn, make_init = _state_model(7)
    model = (step_fn, make_init(seed))
    rows = range(3)
    greedy_seqs, greedy_scores = _run(model, rows, beam_size=1, max_len=6)
    seqs, scores = _run(
      model, rows, sampling.sample, max_len=6, num_samples=2, temperature=1e-4, traced=dict(rng=jax.random.key(seed))
    )
    np.testing.assert_array_equal(seqs, np.repeat(greedy_seqs, 2, axis=1))
    np.testing.assert_allclose(scores, np.repeat(greedy_scores, 2, axis=1), rtol=1e-5, atol=1e-5)

  @parameterized.parameters(
    dict(temperature=3.0, top_k=1),
    dict(temperature=3.0, top_p=1e-6),
    dict(temperature=0.0),
    dict(temperature=0.5, top_k=1, min_len=2),
  )
  def test_greedy_limits(self, min_len=1, **options):
    # min_len and row_max_len mask sampling exactly as they mask beam search.
    model = _state_model(7, eos_bias=1.0)
    model = (model[0], model[1](6))
    rows = range(4)
    limits = dict(row_max_len=np.array([2, 6, 4, 3], np.int32))
    greedy_seqs, greedy_scores = _run(model, rows, beam_size=1, max_len=6, min_len=min_len, traced=limits)
    seqs, scores = _run(
      model,
      rows,
      sampling.sample,
      max_len=6,
      num_samples=3,
      min_len=min_len,
      **options,
      traced=dict(rng=jax.random.key(1), **limits),
    )
    np.testing.assert_array_equal(seqs, np.repeat(greedy_seqs, 3, axis=1))
    np.testing.assert_allclose(scores, np.repeat(greedy_scores, 3, axis=1), rtol=1e-5, atol=1e-5)

  def test_reproducible_scored_and_padded(self):
    model = _state_model(7)
    model = (model[0], model[1](7))
    rows = range(3)
    kwargs = dict(max_len=6, num_samples=8, temperature=1.5)
    draw = lambda key: _run(model, rows, sampling.sample, traced=dict(rng=jax.random.key(key)), **kwargs)
    seqs, scores = draw(0)
    np.testing.assert_array_equal(draw(0)[0], seqs)
    self.assertFalse(np.array_equal(draw(1)[0], seqs))
    self.assertEqual((seqs.dtype, scores.dtype), (np.int32, np.float32))
    chex.assert_shape([seqs, scores], [(3, 8, 6), (3, 8)])
    self.assertGreater(len({tuple(s) for s in seqs[0]}), 1)
    total, lengths, _, _ = _teacher_force(model, rows, seqs)
    np.testing.assert_allclose(scores, total, rtol=1e-5, atol=1e-5)
    flat = seqs.reshape(-1, 6)
    self.assertTrue((lengths < 6).any())
    for seq, length in zip(flat, lengths.reshape(-1)):
      self.assertNotIn(PAD, seq[:length])
      self.assertNotIn(EOS, seq[: length - 1])
      np.testing.assert_array_equal(seq[length:], PAD)

  def test_top_k_and_top_p_restrict_every_draw(self):
    model = _state_model(9)
    model = (model[0], model[1](8))
    rows = range(2)
    key = dict(rng=jax.random.key(3))
    kwargs = dict(max_len=6, num_samples=32, temperature=0.7)
    inside = {}
    for name, extra in [('all', {}), ('top_k', dict(top_k=2)), ('top_p', dict(top_p=0.5))]:
      seqs, _ = _run(model, rows, sampling.sample, traced=key, **kwargs, **extra)
      _, lengths, logp_BxKxTxV, _ = _teacher_force(model, rows, seqs)
      logp_BxKxTxV = np.array(logp_BxKxTxV)
      logp_BxKxTxV[..., PAD] = -np.inf
      probs = np.exp(logp_BxKxTxV / 0.7 - np.max(logp_BxKxTxV / 0.7, -1, keepdims=True))
      probs /= probs.sum(-1, keepdims=True)
      p_token = np.take_along_axis(probs, seqs[..., None], -1)[..., 0]
      # Rank of the drawn token, and the mass of strictly likelier tokens.
      rank = (probs > p_token[..., None]).sum(-1)
      before = np.where(probs > p_token[..., None], probs, 0).sum(-1)
      drawn = np.arange(6) < lengths[..., None]
      inside[name] = ((rank < 2)[drawn].all(), (before < 0.5)[drawn].all())
    self.assertEqual(inside['all'], (False, False))  # the checks can fail
    self.assertTrue(inside['top_k'][0])
    self.assertTrue(inside['top_p'][1])

  @parameterized.parameters(
    (1.0, 0, 1.0, [0.5, 0.3, 0.2]),
    (2.0, 0, 1.0, np.sqrt([0.5, 0.3, 0.2])),
    (1.0, 2, 1.0, [0.5, 0.3, 0.0]),
    (1.0, 0, 0.7, [0.5, 0.3, 0.0]),
    (1.0, 0, 1.0, [0.5, 0.3, 0.0], 0.25),  # epsilon sampling drops B (0.2 < 0.25)
    (1.0, 0, 1.0, [0.5, 0.0, 0.0], 0.6),  # nothing reaches 0.6: the most likely token stays
    (1.0, 2, 1.0, [0.5, 0.0, 0.0], 0.4),  # epsilon after top-k: B is gone, A's 0.375 of the rest < 0.4
  )
  def test_first_token_frequencies(self, temperature, top_k, top_p, want, epsilon=0.0):
    probs = np.zeros((1, 5, 5))
    probs[0, BOS, [EOS, A, B]] = [0.5, 0.3, 0.2]
    probs[0, [A, B], EOS] = 1.0
    seqs, scores = _run(
      _markov_model(probs),
      [0],
      sampling.sample,
      max_len=3,
      num_samples=4000,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      epsilon=epsilon,
      traced=dict(rng=jax.random.key(0)),
    )
    freq = [(seqs[0, :, 0] == tok).mean() for tok in (EOS, A, B)]
    np.testing.assert_allclose(freq, np.asarray(want) / np.sum(want), atol=0.03)
    np.testing.assert_allclose(  # untempered, unrenormalized log-probs
      scores[0], np.log(np.where(seqs[0, :, 0] == A, 0.3, np.where(seqs[0, :, 0] == B, 0.2, 0.5))), rtol=1e-6
    )

  def test_steps_draw_independently(self):
    # A fair coin over {A, B} at every step: each step needs fresh noise.
    probs = np.zeros((1, 5, 5))
    probs[0, [BOS, A, B], A] = probs[0, [BOS, A, B], B] = 0.5
    seqs, scores = _run(
      _markov_model(probs), [0], sampling.sample, max_len=4, num_samples=2000, traced=dict(rng=jax.random.key(0))
    )
    self.assertTrue(np.isin(seqs, [A, B]).all())
    np.testing.assert_allclose((seqs[0, :, 1:] == seqs[0, :, :-1]).mean(0), 0.5, atol=0.05)
    np.testing.assert_allclose(scores, 4 * np.log(0.5), rtol=1e-6)

  @parameterized.parameters(dict(top_k=0, top_p=1.0), dict(top_k=3, top_p=0.9))
  def test_a_row_draws_from_its_own_key_whatever_its_batch(self, top_k, top_p):
    """With one key per row, a row's samples depend on its key and its log-probabilities only: the same in a batch
    of 5, alone, and among other rows in another order; rows with equal keys and inputs draw equal samples."""
    step_fn, make_init = _state_model(7)
    init_state = make_init(5)
    keys = jax.random.split(jax.random.key(3), 5)
    kwargs = dict(max_len=6, num_samples=4, temperature=1.5, top_k=top_k, top_p=top_p)
    draw = lambda rows, key_rows: _run(
      (step_fn, init_state), rows, sampling.sample, traced=dict(rng=keys[np.asarray(key_rows)]), **kwargs
    )
    seqs, scores = draw(range(5), range(5))
    self.assertGreater(len({tuple(s.ravel()) for s in seqs}), 1)
    for rows in ([3], [4, 0, 2], [2, 2, 1, 0, 3]):
      seqs_r, scores_r = draw(rows, rows)
      np.testing.assert_array_equal(seqs_r, seqs[rows])
      np.testing.assert_allclose(scores_r, scores[rows], rtol=1e-6)

  def test_sample_traces_once_and_checks_arguments(self):
    chex.clear_trace_counter()
    step_fn, make_init = _state_model(7)
    init_state = make_init(9)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def draw(state, rng, row_max_len):
      options = decode.DecodeOptions(max_len=5, num_samples=3, top_k=3, top_p=0.9, min_len=1)
      return sampling.sample(
        step_fn, state, rng, options, batch_size=2, bos_id=BOS, eos_id=EOS, pad_id=PAD, row_max_len=row_max_len
      )

    for key in range(3):
      draw(init_state([key, key + 1]), jax.random.key(key), jnp.asarray([key + 2, 4], jnp.int32))
    for bad, message in [
      (dict(temperature=-1.0), 'temperature'),
      (dict(top_k=-1), 'top_k'),
      (dict(top_p=0.0), 'top_p'),
      (dict(num_samples=0), 'num_samples'),
      (dict(min_len=4), 'min_len'),
    ]:
      options = decode.DecodeOptions(max_len=4, **bad)
      with self.assertRaisesRegex(ValueError, message):
        sampling.sample(step_fn, init_state([0]), jax.random.key(0), options, batch_size=1, bos_id=BOS, eos_id=EOS)


if __name__ == '__main__':
  absltest.main()
