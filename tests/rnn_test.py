"""Tests of the recurrent cells and the scanned, masked (bi)directional stacks."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import rnn


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_step(kind, p, carry, x):
  """The textbook equations in numpy, from the cell's own parameters."""
  wi, bi = np.asarray(p['input']['kernel']), np.asarray(p['input']['bias'])
  wh = np.asarray(p['recurrent']['kernel'])
  h = carry[-1]
  if kind == 'rnn':
    return (np.tanh(x @ wi + bi + h @ wh),)
  if kind == 'gru':
    bh = np.asarray(p['recurrent']['bias'])
    xr, xz, xn = np.split(x @ wi + bi, 3, axis=-1)
    hr, hz, hn = np.split(h @ wh + bh, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return ((1 - z) * n + z * h,)
  i, f, g, o = np.split(x @ wi + bi + h @ wh, 4, axis=-1)
  c = _sigmoid(f) * carry[0] + _sigmoid(i) * np.tanh(g)
  return (c, _sigmoid(o) * np.tanh(c))


def _lengths_mask(lengths, length):
  return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


class CellTest(parameterized.TestCase):
  @parameterized.parameters('rnn', 'gru', 'lstm')
  def test_step_matches_reference_equations(self, kind):
    cell = rnn.RecurrentCell(kind, 5)
    x = np.random.RandomState(0).randn(3, 4).astype(np.float32)
    carry = tuple(
      np.random.RandomState(i + 1).randn(3, 5).astype(np.float32) for i in range(2 if kind == 'lstm' else 1)
    )
    params = cell.init(jax.random.PRNGKey(0), carry, x, method=lambda m, c, x: m.step(c, m.input_proj(x)))['params']
    got = cell.apply({'params': params}, carry, x, method=lambda m, c, x: m.step(c, m.input_proj(x)))
    want = _reference_step(kind, params, carry, x)
    for g, w in zip(got, want):
      np.testing.assert_allclose(g, w, atol=1e-5)

  def test_lstm_forget_bias_is_one_and_recurrent_blocks_orthogonal(self):
    cell = rnn.RecurrentCell('lstm', 6)
    params = cell.init(
      jax.random.PRNGKey(0),
      (jnp.zeros((1, 6)),) * 2,
      jnp.zeros((1, 3)),
      method=lambda m, c, x: m.step(c, m.input_proj(x)),
    )['params']
    bias = np.asarray(params['input']['bias'])
    np.testing.assert_array_equal(bias[6:12], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[6:12]), 0.0)
    wh = np.asarray(params['recurrent']['kernel'])
    for block in np.split(wh, 4, axis=1):
      np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-5)

  def test_uniform_init_range(self):
    cell = rnn.RecurrentCell('gru', 8, recurrent_init='uniform', init_scale=0.08)
    params = cell.init(
      jax.random.PRNGKey(0), (jnp.zeros((1, 8)),), jnp.zeros((1, 3)), method=lambda m, c, x: m.step(c, m.input_proj(x))
    )['params']
    for w in (params['input']['kernel'], params['recurrent']['kernel']):
      self.assertLessEqual(float(jnp.abs(w).max()), 0.08)
      self.assertGreater(float(jnp.abs(w).max()), 0.04)


class StackTest(parameterized.TestCase):
  def test_reverse_within_lengths(self):
    x = jnp.arange(12).reshape(2, 6)
    got = rnn.reverse_within_lengths(x, jnp.array([4, 6]))
    np.testing.assert_array_equal(got, [[3, 2, 1, 0, 4, 5], [11, 10, 9, 8, 7, 6]])
    np.testing.assert_array_equal(rnn.reverse_within_lengths(got, jnp.array([4, 6])), x)

  @parameterized.product(kind=['rnn', 'gru', 'lstm'], bidirectional=[False, True])
  def test_padding_and_batch_invariance(self, kind, bidirectional):
    """Each row's outputs and final states equal those of the row run alone without padding."""
    stack = rnn.RNNStack(kind, num_layers=2, hidden_dim=4, bidirectional=bidirectional)
    lengths = [5, 2, 7]
    x = np.random.RandomState(0).randn(3, 9, 3).astype(np.float32)
    mask = _lengths_mask(lengths, 9)
    params = stack.init(jax.random.PRNGKey(1), x, mask)
    out, finals = stack.apply(params, x, mask)
    chex.assert_shape(out, (3, 9, 4 * (2 if bidirectional else 1)))
    np.testing.assert_array_equal(np.asarray(out)[mask == 0], 0.0)
    for b, n in enumerate(lengths):
      out_b, finals_b = stack.apply(params, x[b : b + 1, :n], np.ones((1, n), np.int32))
      np.testing.assert_allclose(out[b, :n], out_b[0], atol=1e-5)
      for layer, layer_b in zip(finals, finals_b):
        for c, c_b in zip(layer, layer_b):
          np.testing.assert_allclose(c[b], c_b[0], atol=1e-5)

  def test_backward_direction_reads_the_sequence_backwards(self):
    """The backward final state equals a forward pass over the reversed sequence with the same weights."""
    stack = rnn.RNNStack('gru', num_layers=1, hidden_dim=4, bidirectional=True)
    x = np.random.RandomState(0).randn(1, 5, 3).astype(np.float32)
    mask = np.ones((1, 5), np.int32)
    variables = stack.init(jax.random.PRNGKey(1), x, mask)
    _, finals = stack.apply(variables, x, mask)
    p = variables['params']
    fwd_only = rnn.RNNStack('gru', num_layers=1, hidden_dim=4)
    swapped = {'params': {'layer0_fwd': p['layer0_bwd']}}
    _, finals_rev = fwd_only.apply(swapped, x[:, ::-1], mask)
    np.testing.assert_allclose(finals[0][0][:, 4:], finals_rev[0][0], atol=1e-6)

  def test_variational_dropout_shares_mask_over_time(self):
    stack = rnn.RNNStack('rnn', num_layers=2, hidden_dim=64, dropout_rate=0.5, variational_dropout=True)
    x = np.ones((2, 6, 3), np.float32)
    mask = np.ones((2, 6), np.int32)
    variables = stack.init(jax.random.PRNGKey(0), x, mask)
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
      m = context.module
      if m.name == 'input' and getattr(m.parent, 'name', None) == 'layer1_fwd':
        captured['x'] = args[0]  # the input of layer 1 after dropout
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      stack.apply(variables, x, mask, train=True, rngs={'dropout': jax.random.PRNGKey(3)})
    zeros = np.asarray(captured['x']) == 0.0  # [T, B, H] input of layer 1 after dropout (the stack is time-major)
    self.assertTrue(zeros.any())
    np.testing.assert_array_equal(zeros, np.broadcast_to(zeros[:1], zeros.shape))

  def test_jit_and_no_jit_agree(self):
    stack = rnn.RNNStack('lstm', num_layers=1, hidden_dim=4, bidirectional=True)
    x = np.random.RandomState(0).randn(2, 5, 3).astype(np.float32)
    mask = _lengths_mask([5, 3], 5)
    v = stack.init(jax.random.PRNGKey(0), x, mask)
    out, _ = stack.apply(v, x, mask)
    out_jit, _ = jax.jit(stack.apply)(v, x, mask)
    np.testing.assert_allclose(out, out_jit, atol=1e-6)
    chex.assert_tree_all_finite(out_jit)


class LstmScanTest(parameterized.TestCase):
  """`lstm_scan`'s hand-written backward pass against autodiff of the same recurrence written as a plain scan."""

  @staticmethod
  def _autodiff_reference(kernel, xproj, c0, h0):
    def body(carry, x):
      c, h = carry
      i, f, g, o = jnp.split(x + h @ kernel, 4, axis=-1)
      c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
      h = jax.nn.sigmoid(o) * jnp.tanh(c)
      return (c, h), (c, h)

    return jax.lax.scan(body, (c0, h0), xproj)[1]

  def test_forward_and_gradients_equal_autodiff(self):
    t, b, hdim = 6, 3, 5
    rng = np.random.RandomState(0)
    args = (rng.randn(hdim, 4 * hdim) * 0.5, rng.randn(t, b, 4 * hdim), rng.randn(b, hdim), rng.randn(b, hdim))
    args = tuple(jnp.asarray(a, jnp.float32) for a in args)
    weights = jnp.asarray(rng.randn(2, t, b, hdim), jnp.float32)  # a loss that reads every cs and hs

    def loss(fn):
      return lambda *a: sum((w * out).sum() for w, out in zip(weights, fn(*a)))

    chex.assert_trees_all_close(rnn.lstm_scan(*args), self._autodiff_reference(*args), atol=1e-6)
    got = jax.grad(loss(rnn.lstm_scan), argnums=(0, 1, 2, 3))(*args)
    want = jax.grad(loss(self._autodiff_reference), argnums=(0, 1, 2, 3))(*args)
    for g, w, name in zip(got, want, ('kernel', 'xproj', 'c0', 'h0')):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
      self.assertGreater(float(jnp.abs(w).max()), 1e-3, name)  # the check compares gradients that are not zero

  @parameterized.parameters('rnn', 'gru', 'lstm')
  def test_stack_gradients_with_padding_equal_a_masked_reference(self, kind):
    """Through RNNStack (unmasked recurrence, final state read at each length): a padded row's gradients equal
    those of the same row alone without padding."""
    stack = rnn.RNNStack(kind, num_layers=1, hidden_dim=4, bidirectional=True)
    x = np.random.RandomState(1).randn(2, 6, 3).astype(np.float32)
    mask = _lengths_mask([6, 4], 6)
    v = stack.init(jax.random.PRNGKey(0), x, mask)

    def loss(v, x, mask):
      out, finals = stack.apply(v, x, mask)
      return (out**2).sum() + sum((c**3).sum() for carry in finals for c in carry)

    g_row = jax.grad(loss, argnums=1)(v, x[1:, :4], mask[1:, :4])
    g_batch = jax.grad(loss, argnums=1)(v, x, mask)
    np.testing.assert_allclose(g_batch[1, :4], g_row[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(g_batch[1, 4:], 0.0)  # padded steps get no gradient


def _textbook_gru(kernel, bias, xproj, h0):
  """The GRU of Cho et al. 2014 in cuDNN's form (the reset gate multiplies h W + b), as a plain scan."""

  def body(h, x):
    xr, xz, xn = jnp.split(x, 3, axis=-1)
    hr, hz, hn = jnp.split(h @ kernel + bias[None], 3, axis=-1)
    r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h = (1.0 - z) * n + z * h
    return h, h

  return jax.lax.scan(body, h0, xproj)[1]


def _textbook_rnn(kernel, xproj, h0):
  def body(h, x):
    h = jnp.tanh(x + h @ kernel)
    return h, h

  return jax.lax.scan(body, h0, xproj)[1]


class GruAndRnnScanTest(parameterized.TestCase):
  """`gru_scan` and `rnn_scan`: hand-written backward passes against autodiff of the textbook recurrences."""

  @parameterized.parameters('gru', 'rnn')
  def test_forward_and_gradients_equal_autodiff(self, kind):
    t, b, hdim = 7, 3, 5
    rng = np.random.RandomState(0)
    gates = 3 if kind == 'gru' else 1
    args = [
      rng.randn(hdim, gates * hdim) * 0.5,
      rng.randn(gates * hdim),
      rng.randn(t, b, gates * hdim),
      rng.randn(b, hdim),
    ]
    if kind == 'rnn':
      del args[1]
    args = tuple(jnp.asarray(a, jnp.float32) for a in args)
    fn, reference = (rnn.gru_scan, _textbook_gru) if kind == 'gru' else (rnn.rnn_scan, _textbook_rnn)
    weights = jnp.asarray(rng.randn(t, b, hdim), jnp.float32)  # a loss that reads every output
    loss = lambda f: lambda *a: (weights * f(*a)).sum()
    chex.assert_trees_all_close(fn(*args), reference(*args), atol=1e-6)
    argnums = tuple(range(len(args)))
    got = jax.grad(loss(fn), argnums=argnums)(*args)
    want = jax.grad(loss(reference), argnums=argnums)(*args)
    names = ('kernel', 'bias', 'xproj', 'h0') if kind == 'gru' else ('kernel', 'xproj', 'h0')
    for g, w, name in zip(got, want, names):
      np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
      self.assertGreater(float(jnp.abs(w).max()), 1e-3, name)  # the check compares gradients that are not zero

  @parameterized.parameters('gru', 'rnn')
  def test_layer_gradients_equal_the_cell_step_scanned_by_autodiff(self, kind):
    """Through `run_layer` with its parameters: the same gradients as scanning `RecurrentCell.step` with autodiff."""
    cell = rnn.RecurrentCell(kind, 6)
    x = jnp.asarray(np.random.RandomState(2).randn(5, 2, 4), jnp.float32)  # [T, B, D]
    mask = jnp.ones((2, 5), jnp.int32)
    params = cell.init(jax.random.PRNGKey(0), x, mask, method=lambda m, x, mask: rnn.run_layer(m, x, mask))

    def by_step(m, x):
      xproj, carry, outs = m.input_proj(x), m.initial_carry(x.shape[1]), []
      for i in range(x.shape[0]):
        carry = m.step(carry, xproj[i])
        outs.append(carry[-1])
      return jnp.stack(outs)

    loss = lambda p, method: (cell.apply(p, x, method=method) ** 2).sum()
    got = jax.grad(loss)(params, lambda m, x: rnn.run_layer(m, x, mask)[1])
    want = jax.grad(loss)(params, by_step)
    chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
