"""model.rnn_impl (s2s_jax/cudnn_rnn.py): the encoder's LSTM layers packed into cuDNN's weight layout, checked on CPU
through jax.experimental.rnn.lstm_ref on the packed weights against the project's scanned encoder; the parameter
tree and, on CPU, the traced program unchanged."""

import re
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax
import jax
from jax._src.lib import gpu_rnn
from jax.experimental import rnn as jax_rnn
import jax.numpy as jnp
import numpy as np

from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import cudnn_rnn
from s2s_jax import models
from s2s_jax import optim
from s2s_jax import parallel
from s2s_jax import rnn
from s2s_jax import seq2seq_config
from s2s_jax import steps
from s2s_jax import train

# Float32 both ways, the arithmetic in another order (the scan's hand-written backward against lstm_ref's autodiff
# of its own scan): measured at most 6e-8 apart in outputs and final states, 1.5e-6 in input gradients and 7.6e-6 in
# parameter gradients (of up to 63 in size: float32 rounding).
ATOL = 1e-6  # outputs and final states
GRAD_TOL = dict(atol=1e-5, rtol=1e-5)
_LENGTHS = (7, 3, 0, 5, 1)  # mixed, with a row without steps
_STEPS, _DIM, _HIDDEN = 7, 6, 5


def _batch():
  """Inputs [B, T, D] (padded steps not zero, so a leak would show) and their mask."""
  x = np.random.RandomState(0).randn(len(_LENGTHS), _STEPS, _DIM).astype(np.float32)
  mask = (np.arange(_STEPS)[None, :] < np.asarray(_LENGTHS)[:, None]).astype(np.int32)
  return jnp.asarray(x), jnp.asarray(mask)


def _stacks(lstm=cudnn_rnn.reference_lstm, **kw):
  """The project's 2-layer scanned LSTM encoder and the same through a cuDNN layer function."""
  common = dict(kind='lstm', num_layers=2, hidden_dim=_HIDDEN, **kw)
  return rnn.RNNStack(**common), rnn.RNNStack(**common, lstm=lstm)


def _loss(stack, train_: bool):
  """A scalar touching every output and final state nonlinearly, as a function of (params, inputs)."""

  def loss(params, x, mask):
    out = stack.apply({'params': params}, x, mask, train=train_, rngs={'dropout': jax.random.PRNGKey(1)})
    return sum(jnp.sum(jnp.sin(3.0 * leaf)) for leaf in jax.tree.leaves(out)), out

  return loss


def _reference_under_vmap():
  """cudnn_rnn.looped_under_vmap around lstm_ref: cuDNN's wrapper (custom VJP, a loop under vmap) on CPU."""

  def fwd(x, h_0, c_0, weights, lengths, *static):
    return cudnn_rnn.reference_lstm(x, h_0, c_0, weights, lengths, *static), (x, h_0, c_0, weights, lengths)

  def bwd(*args):
    *static, (x, h_0, c_0, weights, lengths), grads = args
    _, vjp = jax.vjp(lambda *a: cudnn_rnn.reference_lstm(*a, lengths, *static), x, h_0, c_0, weights)
    return (*vjp(grads), None)

  return cudnn_rnn.looped_under_vmap(fwd, bwd)


class PackingTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('forward_variational_dropout', dict(dropout_rate=0.3, variational_dropout=True), True),
    ('bidirectional', dict(bidirectional=True), False),
    ('bidirectional_pyramid_dropout', dict(bidirectional=True, pyramid=True, dropout_rate=0.3), True),
  )
  def test_outputs_final_states_and_gradients_match_the_scan(self, kw, train_):
    scan, packed = _stacks(**kw)
    x, mask = _batch()
    params = scan.init(jax.random.PRNGKey(0), x, mask)['params']
    grad = lambda stack: jax.jit(jax.grad(_loss(stack, train_), argnums=(0, 1), has_aux=True))(params, x, mask)
    (want_dparams, want_dx), (want_out, want_finals) = grad(scan)
    (got_dparams, got_dx), (got_out, got_finals) = grad(packed)
    chex.assert_trees_all_close(got_out, want_out, atol=ATOL)
    chex.assert_trees_all_close(got_finals, want_finals, atol=ATOL)
    chex.assert_trees_all_close(got_dparams, want_dparams, **GRAD_TOL)
    chex.assert_trees_all_close(got_dx, want_dx, **GRAD_TOL)
    self.assertEqual(float(jnp.abs(got_out[2]).max()), 0.0)  # the row without steps: zero outputs, zero states
    self.assertEqual(float(jnp.abs(got_dx[2]).max()), 0.0)
    for carry in got_finals:
      self.assertEqual(float(jnp.abs(jnp.stack(carry)[:, 2]).max()), 0.0)

  def test_packing_is_cudnns_layout(self):
    """pack -> jax.experimental.rnn.unpack_lstm_weights gives back each direction's W_ih = input kernel^T, W_hh =
    recurrent kernel^T, b_ih = the input bias and b_hh = 0 (gates i, f, g, o in both)."""
    scan, _ = _stacks(bidirectional=True)
    x, mask = _batch()
    params = scan.init(jax.random.PRNGKey(0), x, mask)['params']
    cells = [params['layer1_fwd'], params['layer1_bwd']]  # layer 1 reads both directions: D = 2H
    weights = cudnn_rnn.pack_weights(cells)
    self.assertEqual(weights.shape, (jax_rnn.get_num_params_in_lstm(2 * _HIDDEN, _HIDDEN, 1, True),))
    w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(weights, 2 * _HIDDEN, _HIDDEN, 1, True)
    for k, p in enumerate(cells):
      np.testing.assert_array_equal(w_ih[k], p['input']['kernel'].T)
      np.testing.assert_array_equal(w_hh[k], p['recurrent']['kernel'].T)
      np.testing.assert_array_equal(b_ih[k], p['input']['bias'])
      np.testing.assert_array_equal(b_hh[k], np.zeros(4 * _HIDDEN))

  def test_the_parameter_tree_is_the_scans(self):
    """Checkpoints need no conversion: the same names, shapes and initial values either way."""
    scan, packed = _stacks(bidirectional=True)
    x, mask = _batch()
    want = scan.init(jax.random.PRNGKey(0), x, mask)
    got = packed.init(jax.random.PRNGKey(0), x, mask)
    self.assertEqual(jax.tree.structure(got), jax.tree.structure(want))
    jax.tree.map(np.testing.assert_array_equal, got, want)

  def test_vmapped_over_seeds_it_matches_the_scan(self):
    """config.num_seeds > 1 vmaps the train step over stacked parameters (inputs shared): cuDNN's primitives have
    no batching rule, so the layer function loops over the seeds; gradients as the vmapped scan's."""
    scan, packed = _stacks(lstm=_reference_under_vmap(), bidirectional=True)
    x, mask = _batch()
    params = jax.vmap(lambda k: scan.init(k, x, mask)['params'])(jax.random.split(jax.random.PRNGKey(0), 2))
    grad = lambda stack: jax.jit(jax.vmap(jax.grad(_loss(stack, False), has_aux=True), in_axes=(0, None, None)))
    chex.assert_trees_all_close(grad(packed)(params, x, mask), grad(scan)(params, x, mask), **GRAD_TOL)

  def test_the_cudnn_layer_function_traces_under_vmap_and_grad(self):
    """cudnn_lstm itself (jax.experimental.rnn's forward and backward, looped under vmap) traces on CPU to one
    rnn_fwd and one rnn_bwd per layer, both directions in one num_layers=1 call. It cannot run here: only jaxlib's
    cuDNN workspace-size query, which needs CUDA, is replaced (no lowering, no execution)."""
    scan, packed = _stacks(lstm=cudnn_rnn.cudnn_lstm, bidirectional=True)
    x, mask = _batch()
    params = jax.vmap(lambda k: scan.init(k, x, mask)['params'])(jax.random.split(jax.random.PRNGKey(0), 2))
    grad = jax.vmap(jax.grad(_loss(packed, False), has_aux=True), in_axes=(0, None, None))
    sizes = mock.patch.object(gpu_rnn, 'compute_rnn_workspace_reserve_space_sizes', lambda *a: (0, 16), create=True)
    with sizes:
      text = str(jax.make_jaxpr(grad)(params, x, mask))
    self.assertEqual((text.count('rnn_fwd['), text.count('rnn_bwd[')), (2, 2))
    params_of = [' '.join(m.split()) for m in re.findall(r'rnn_fwd\[([^\]]*)\]', text)]
    for input_size, call in zip((_DIM, 2 * _HIDDEN), params_of):
      self.assertIn('bidirectional=True', call)
      self.assertIn(f'hidden_size={_HIDDEN} input_size={input_size} num_layers=1', call)


def _model_config(**model) -> seq2seq_config.Seq2SeqConfig:
  base = dict(src_vocab_size=20, tgt_vocab_size=20, num_layers=2, bidirectional=True, max_src_len=12)
  return seq2seq_config.Seq2SeqConfig(**{**base, **model})


def _lowered_train_step(rnn_impl: str) -> str:
  """The text of the pmapped train step of a small bidirectional 2-layer LSTM with dropout."""
  config = config_lib.base_config()
  config.model.update(src_vocab_size=20, tgt_vocab_size=20, max_src_len=12, num_layers=2, bidirectional=True)
  config.model.update(embed_dim=8, hidden_dim=16, dropout_rate=0.1, rnn_impl=rnn_impl)
  model = models.Seq2Seq(config_lib.model_config(config))
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  state = flax.jax_utils.replicate(steps.create_train_state(jax.random.PRNGKey(0), model, tx, 12, 7))
  batch = {'inputs': np.ones((16, 12), np.int32), 'inputs_mask': np.ones((16, 12), np.int32)}
  batch = parallel.shard_batch({**batch, 'targets': np.ones((16, 7), np.int32)})
  p_step = jax.pmap(train.train_step_fn(config), axis_name='batch', in_axes=(0, 0, None))
  return p_step.lower(state, batch, optim.hyperparameters(config)).as_text()


class ChoiceTest(parameterized.TestCase):
  def test_auto_on_cpu_is_the_scan_program(self):
    self.assertEqual(jax.default_backend(), 'cpu')
    self.assertIsNone(cudnn_rnn.encoder_lstm(_model_config()))
    self.assertEqual(config_lib.base_config().model.rnn_impl, 'auto')
    self.assertEqual(_lowered_train_step('auto'), _lowered_train_step('scan'))

  def test_cudnn_on_cpu_is_an_error_naming_auto_and_scan(self):
    cfg = _model_config(rnn_impl='cudnn')
    cfg.validate()  # a valid config (it may be launched on a GPU machine): the model build refuses
    ids = jnp.ones((2, 5), jnp.int32)
    with self.assertRaisesRegex(ValueError, r"rnn_impl=cudnn needs a CUDA GPU .*'cpu'.*'auto'.*'scan'"):
      models.Seq2Seq(cfg).init(jax.random.PRNGKey(0), ids, ids, ids)

  @parameterized.named_parameters(
    ('unknown', dict(rnn_impl='fast'), r"model.rnn_impl='fast' is not one of \('scan', 'cudnn', 'auto'\)"),
    ('gru', dict(rnn_impl='cudnn', cell='gru'), r"rnn_impl=cudnn runs LSTM layers in float32 only.*'gru'.*'auto'"),
    ('bfloat16', dict(rnn_impl='cudnn', dtype='bfloat16'), r"float32 only.*'bfloat16'.*'auto'.* or 'scan'"),
  )
  def test_config_check_errors(self, model, message):
    config = config_lib.base_config()
    config.model.update(model)
    with self.assertRaisesRegex(ValueError, message):
      config_checks.validate(config)

  def test_what_auto_picks(self):
    """On a CUDA GPU auto picks cuDNN for a float32 LSTM without remat, else the scan; off one, the scan always."""
    self.assertIs(cudnn_rnn.encoder_lstm(_model_config(), cuda=True), cudnn_rnn.cudnn_lstm)
    self.assertIs(cudnn_rnn.encoder_lstm(_model_config(rnn_impl='cudnn'), cuda=True), cudnn_rnn.cudnn_lstm)
    for model in (dict(cell='gru'), dict(dtype='bfloat16'), dict(remat=True), dict(rnn_impl='scan')):
      self.assertIsNone(cudnn_rnn.encoder_lstm(_model_config(**model), cuda=True), model)
      self.assertIsNone(cudnn_rnn.encoder_lstm(_model_config(**model)), model)
      config = config_lib.base_config()
      config.model.update(model)
      config_checks.validate(config)


if __name__ == '__main__':
  absltest.main()
