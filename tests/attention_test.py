"""Tests of the attention scores, masking and the table of valid combinations."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import attention


def _apply(score, query, memory, mask, query_dim=None, max_src_len=8):
  att = attention.Attention(score, query_dim=query_dim or query.shape[-1], attention_dim=6, max_src_len=max_src_len)

  def run(m, q, mem, mask):
    return m(q, m.keys(mem), mem, mask)

  params = att.init(jax.random.PRNGKey(0), query, memory, mask, method=run)
  return att.apply(params, query, memory, mask, method=run), params.get('params', {})


class TableTest(absltest.TestCase):
  def test_table_content(self):
    table = attention.VALID_COMBINATIONS
    self.assertLen(table, len(set(table)))
    self.assertIn(('none_init', None, False), table)
    self.assertIn(('none_concat', None, False), table)
    for score in attention.SCORES:
      self.assertIn(('bahdanau', score, False), table)
      self.assertNotIn(('bahdanau', score, True), table)  # input feeding does not apply to the Bahdanau flow
      self.assertIn(('luong', score, False), table)
      self.assertIn(('luong', score, True), table)
    self.assertLen(table, 2 + 6 + 12)

  def test_check_combination_errors_list_choices(self):
    with self.assertRaisesRegex(ValueError, r"model.attention='bahdanu'.*'none_init'.*'luong'"):
      attention.check_combination('bahdanu', 'additive', False)
    with self.assertRaisesRegex(ValueError, r"model.attention_score='addtive'.*'additive'"):
      attention.check_combination('luong', 'addtive', False)
    with self.assertRaisesRegex(ValueError, 'input feeding exists only in the luong flow'):
      attention.check_combination('bahdanau', 'dot', True)
    attention.check_combination('luong', 'dot', True)  # valid: no error
    attention.check_combination('none_concat', 'location', False)  # the score is ignored without attention


class ScoreTest(parameterized.TestCase):
  def setUp(self):
    super().setUp()
    rng = np.random.RandomState(0)
    self.query = rng.randn(2, 4).astype(np.float32)
    self.memory = rng.randn(2, 5, 4).astype(np.float32)
    self.mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)

  @parameterized.parameters(*attention.SCORES)
  def test_weights_are_a_masked_distribution(self, score):
    (context, weights), _ = _apply(score, self.query, self.memory, self.mask)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[self.mask == 0], 0.0)
    np.testing.assert_allclose(context, np.einsum('bs,bsd->bd', weights, self.memory), atol=1e-5)

  @parameterized.parameters(*attention.SCORES)
  def test_scores_match_their_formula(self, score):
    (_, weights), p = _apply(score, self.query, self.memory, self.mask)
    q, k = self.query, self.memory
    if score in ('additive', 'concat'):
      hq = q @ np.asarray(p['query']['kernel']) + (np.asarray(p['query']['bias']) if score == 'additive' else 0)
      e = np.tanh(k @ np.asarray(p['key']['kernel']) + hq[:, None]) @ np.asarray(p['energy']['kernel'])
      e = e[..., 0]
    elif score == 'dot':
      e = np.einsum('bq,bsq->bs', q, k)
    elif score == 'scaled_dot':
      e = np.einsum('bq,bsq->bs', q, k) / 2.0
    elif score == 'general':
      e = np.einsum('bq,bsq->bs', q, k @ np.asarray(p['key']['kernel']))
    else:
      e = (q @ np.asarray(p['location']['kernel']) + np.asarray(p['location']['bias']))[:, :5]
    e = np.where(self.mask == 1, e, -np.inf)
    want = np.exp(e - e.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, want, atol=1e-5)
    if score == 'additive':
      self.assertIn('bias', p['query'])
    if score == 'concat':
      self.assertNotIn('bias', p['query'])

  @parameterized.parameters('dot', 'scaled_dot')
  def test_dot_projects_memory_of_another_size(self, score):
    memory = np.random.RandomState(1).randn(2, 5, 6).astype(np.float32)  # e.g. a bidirectional encoder
    (context, _), params = _apply(score, self.query, memory, self.mask)
    self.assertEqual(params['key']['kernel'].shape, (6, 4))
    self.assertEqual(context.shape, (2, 6))
    _, params_same = _apply(score, self.query, self.memory, self.mask)
    self.assertNotIn('key', params_same)  # equal sizes: the memory is used as it is

  def test_location_needs_a_long_enough_maximum(self):
    with self.assertRaisesRegex(ValueError, 'raise data.max_src_len'):
      _apply('location', self.query, self.memory, self.mask, max_src_len=3)

  def test_fully_masked_row_is_finite(self):
    mask = np.zeros((2, 5), np.int32)
    (context, weights), _ = _apply('general', self.query, self.memory, mask)
    self.assertTrue(np.isfinite(np.asarray(weights)).all())
    self.assertTrue(np.isfinite(np.asarray(context)).all())


class AdditiveEnergiesTest(parameterized.TestCase):
  """The hand-written backward pass of the additive energies against autodiff of the formula."""

  @parameterized.parameters(False, True)
  def test_values_and_gradients_equal_autodiff(self, coverage):
    rng = np.random.RandomState(0)
    b, n, s, a = 2, 3, 5, 4
    args = [rng.randn(b, s, a), rng.randn(b, n, a), rng.randn(a)]
    if coverage:
      args += [rng.rand(b, n, s), rng.randn(a)]
    args = [jnp.asarray(x, jnp.float32) for x in args]

    def formula(keys, query, v, cov=None, w=None):
      pre = keys[:, None] + query[:, :, None]
      if cov is not None:
        pre = pre + cov[..., None] * w[None, None, None]
      return (jnp.tanh(pre) * v[None, None, None]).sum(-1)

    weights = jnp.asarray(rng.randn(b, n, s), jnp.float32)
    loss = lambda f: lambda *x: (weights * f(*x)).sum()
    np.testing.assert_allclose(attention.additive_energies(*args), formula(*args), atol=1e-6)
    argnums = tuple(range(len(args)))
    got = jax.grad(loss(attention.additive_energies), argnums)(*args)
    want = jax.grad(loss(formula), argnums)(*args)
    for g, w, name in zip(got, want, ('keys', 'query', 'v', 'coverage', 'w_cov')):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5, err_msg=name)
      self.assertGreater(float(jnp.abs(w).max()), 1e-3, name)


if __name__ == '__main__':
  absltest.main()
