"""Tests of Seq2Seq: every decoder flow, both paths (teacher forcing and step by step), padding, configs."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import testutil

from s2s_jax import attention
from s2s_jax import models
from s2s_jax import rnn
from s2s_jax import seq2seq_config

B, S, T = 3, 7, 5
LENGTHS = [7, 3, 5]


def _config(**kw) -> seq2seq_config.Seq2SeqConfig:
  base = dict(
    src_vocab_size=11, tgt_vocab_size=13, embed_dim=6, hidden_dim=8, max_src_len=12, num_layers=2, bridge='dense'
  )
  base.update(kw)
  return seq2seq_config.Seq2SeqConfig(**base)


def _combo_kwargs(combo):
  flow, score, feed = combo
  return dict(
    attention=flow, attention_score=score or 'additive', input_feeding=feed, context_to_output=flow == 'none_concat'
  )


def _batch(seed=0):
  rng = np.random.RandomState(seed)
  mask = (np.arange(S)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
  inputs = rng.randint(4, 11, (B, S)) * mask
  targets = rng.randint(4, 13, (B, T))
  return jnp.asarray(inputs), jnp.asarray(mask), jnp.asarray(targets)


def _step_by_step_logits(model, variables, inputs, mask, targets):
  return testutil.step_by_step(model, variables, inputs, mask, targets)[0]


def _random_variables(model, *args, seed=0):
  """Parameters with the model's shapes filled with N(0, 0.5): no initializer compiles (they are slow on CPU)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.randn(*s.shape), s.dtype), shapes)


def _cases(full: bool):
  """(combination, cell, bidirectional): all pairs of values (fast tier) or the full product (slow tier)."""
  cases = []
  for (i, combo), (j, cell) in itertools.product(enumerate(attention.VALID_COMBINATIONS), enumerate(rnn.CELLS)):
    for bidirectional in (False, True) if full else ((i + j) % 2 == 0,):
      name = f'{combo[0]}_{combo[1]}_feed{int(combo[2])}_{cell}_{"bi" if bidirectional else "uni"}'
      cases.append(dict(testcase_name=name, combo=combo, cell=cell, bidirectional=bidirectional))
  return cases


def _check_paths_agree(test, combo, cell, bidirectional, **extra):
  model = models.Seq2Seq(_config(cell=cell, bidirectional=bidirectional, **_combo_kwargs(combo), **extra))
  inputs, mask, targets = _batch()
  variables = _random_variables(model, inputs, mask, targets)

  @jax.jit
  def both_paths(variables, inputs, mask, targets):
    return (
      model.apply(variables, inputs, mask, targets, return_attention=True),
      _step_by_step_logits(model, variables, inputs, mask, targets),
    )

  (logits, attn), stepped = both_paths(variables, inputs, mask, targets)
  chex.assert_shape(logits, (B, T, 13))
  chex.assert_tree_all_finite(logits)
  if combo[0] in attention.NO_ATTENTION:
    test.assertIsNone(attn)
  else:
    chex.assert_shape(attn, (B, T, S))
    np.testing.assert_allclose(attn.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(attn)[np.broadcast_to(mask[:, None, :] == 0, attn.shape)], 0.0)
  np.testing.assert_allclose(stepped, logits, atol=1e-5, rtol=1e-5)


class PathsAgreeTest(parameterized.TestCase):
  """Teacher-forced logits equal a manual decode_step loop (1e-5), for every valid combination and cell."""

  @parameterized.named_parameters(*_cases(full=False))
  def test_pairwise(self, combo, cell, bidirectional):
    _check_paths_agree(self, combo, cell, bidirectional)

  @parameterized.parameters(
    ('none_concat', None, False), ('bahdanau', 'additive', False), ('luong', 'general', True), ('luong', 'dot', False)
  )
  def test_embed_to_output(self, *combo):
    _check_paths_agree(self, combo, 'gru', False, embed_to_output=True)


def _masked_softmax(e, mask):
  e = np.where(mask, e, -np.inf)
  e = np.exp(e - e.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


class AttentionQueryTest(absltest.TestCase):
  """The step of each attention flow against the same step written out in numpy from the parameters."""

  def _first_step(self, **kw):
    model = models.Seq2Seq(_config(cell='gru', num_layers=1, **kw))
    inputs, mask, targets = _batch()
    variables = _random_variables(model, inputs, mask, targets)
    memory, state = model.apply(variables, inputs, mask, method=models.Seq2Seq.encode)
    bos = jnp.full((B,), 2, jnp.int32)
    _, new_state = model.apply(variables, bos, state, memory, method=models.Seq2Seq.decode_step)
    params = jax.tree.map(np.asarray, variables['params']['decoder'])
    return model, variables, memory, state, new_state, params, np.asarray(mask).astype(bool)

  def test_bahdanau_queries_the_previous_state(self):
    _, _, memory, state, new_state, params, mask = self._first_step(attention='bahdanau', attention_score='additive')
    att, values = params['attention'], np.asarray(memory['values'])
    keys = values @ att['key']['kernel']

    def weights(s):
      q = s @ att['query']['kernel'] + att['query']['bias']
      return _masked_softmax(np.tanh(keys + q[:, None, :]) @ att['energy']['kernel'][:, 0], mask)

    s_prev, s_new = np.asarray(state['rnn'][-1][-1]), np.asarray(new_state['rnn'][-1][-1])
    np.testing.assert_allclose(new_state['attention'], weights(s_prev), atol=1e-5)  # query s_{t-1}
    self.assertGreater(np.abs(weights(s_new) - weights(s_prev)).max(), 1e-3)  # s_t would give other weights

  def test_luong_input_feeding_feeds_the_attentional_vector(self):
    model, variables, memory, _, new_state, params, mask = self._first_step(
      attention='luong', attention_score='general', input_feeding=True
    )
    values, h = np.asarray(memory['values']), np.asarray(new_state['rnn'][-1][-1])
    alpha = _masked_softmax(np.einsum('bsq,bq->bs', values @ params['attention']['key']['kernel'], h), mask)
    np.testing.assert_allclose(new_state['attention'], alpha, atol=1e-5)  # query h_t, the current state
    context = np.einsum('bs,bsd->bd', alpha, values)
    h_tilde = np.tanh(np.concatenate([context, h], axis=-1) @ params['combine']['kernel'])
    np.testing.assert_allclose(new_state['feed'], h_tilde, atol=1e-5)  # what the next step's input gets
    ids = jnp.full((B,), 5, jnp.int32)
    step = lambda state: model.apply(variables, ids, state, memory, method=models.Seq2Seq.decode_step)[0]
    zeroed = dict(new_state, feed=jnp.zeros_like(new_state['feed']))
    self.assertGreater(float(jnp.abs(step(new_state) - step(zeroed)).max()), 1e-3)  # and the next step reads it


@pytest.mark.slow
class PathsAgreeFullTest(parameterized.TestCase):
  """The same check over the full product of combinations, cells and directions (slow tier)."""

  @parameterized.named_parameters(*_cases(full=True))
  def test_full_product(self, combo, cell, bidirectional):
    _check_paths_agree(self, combo, cell, bidirectional)


_PADDING_CASES = [
  ('none_init', None, False),
  ('none_concat', None, False),
  ('bahdanau', 'additive', False),
  *(('luong', score, True) for score in attention.SCORES),
]


class PaddingTest(parameterized.TestCase):
  @parameterized.parameters(*_PADDING_CASES)
  def test_source_padding_does_not_change_logits(self, *combo):
    model = models.Seq2Seq(_config(cell='lstm', bidirectional=True, **_combo_kwargs(combo)))
    inputs, mask, targets = _batch()
    variables = _random_variables(model, inputs, mask, targets)
    apply = jax.jit(model.apply)
    logits = apply(variables, inputs, mask, targets)
    pad = ((0, 0), (0, 4))
    logits_padded = apply(variables, jnp.pad(inputs, pad), jnp.pad(mask, pad), targets)
    np.testing.assert_allclose(logits_padded, logits, atol=1e-5)

  def test_each_row_alone_equals_its_row_in_the_batch(self):
    model = models.Seq2Seq(_config(cell='gru', bidirectional=True, attention='bahdanau', attention_score='dot'))
    inputs, mask, targets = _batch()
    variables = _random_variables(model, inputs, mask, targets)
    logits = jax.jit(model.apply)(variables, inputs, mask, targets)
    for b, n in enumerate(LENGTHS):
      alone = jax.jit(model.apply)(variables, inputs[b : b + 1, :n], mask[b : b + 1, :n], targets[b : b + 1])
      np.testing.assert_allclose(alone[0], logits[b], atol=1e-5)


class ModelTest(parameterized.TestCase):
  def test_dropout_only_in_training(self):
    model = models.Seq2Seq(_config(dropout_rate=0.3, attention='bahdanau', attention_score='additive'))
    inputs, mask, targets = _batch()
    variables = _random_variables(model, inputs, mask, targets)
    eval1 = jax.jit(model.apply)(variables, inputs, mask, targets)
    eval2 = jax.jit(model.apply)(variables, inputs, mask, targets)
    np.testing.assert_array_equal(eval1, eval2)
    train_apply = jax.jit(lambda v, k: model.apply(v, inputs, mask, targets, train=True, rngs={'dropout': k}))
    train = lambda k: train_apply(variables, jax.random.PRNGKey(k))
    self.assertGreater(float(jnp.abs(train(1) - eval1).max()), 1e-3)
    self.assertGreater(float(jnp.abs(train(1) - train(2)).max()), 1e-3)
    np.testing.assert_array_equal(train(1), train(1))

  def test_tied_embeddings_share_the_matrix(self):
    model = models.Seq2Seq(_config(tie_embeddings=True))
    inputs, mask, targets = _batch()
    params = _random_variables(model, inputs, mask, targets)['params']
    self.assertNotIn('output', params['decoder'])
    self.assertEqual(params['decoder']['output_bias'].shape, (13,))

  @parameterized.parameters('copy', 'dense', 'zeros')
  def test_bridges(self, bridge):
    model = models.Seq2Seq(_config(bridge=bridge, cell='lstm', bidirectional=True, hidden_dim=8))
    inputs, mask, _ = _batch()
    targets = jnp.ones((B, T), jnp.int32)
    variables = _random_variables(model, inputs, mask, targets)
    _, state = jax.jit(lambda v: model.apply(v, inputs, mask, method=models.Seq2Seq.encode))(variables)
    self.assertLen(state['rnn'], 2)
    for carry in state['rnn']:
      self.assertLen(carry, 2)  # (c, h)
      chex.assert_shape(carry, (B, 8))
      if bridge == 'zeros':
        np.testing.assert_array_equal(carry[1], 0.0)
      else:
        self.assertGreater(float(jnp.abs(carry[1]).max()), 0.0)

  def test_encoder_units(self):
    self.assertEqual(_config(bidirectional=True, hidden_dim=8).encoder_units, 4)
    self.assertEqual(_config(bidirectional=False, hidden_dim=8).encoder_units, 8)
    self.assertEqual(_config(bidirectional=True, encoder_hidden_dim=5).encoder_units, 5)

  @parameterized.named_parameters(
    ('bad_cell', dict(cell='lstn'), r"model.cell='lstn' is not one of \('rnn', 'gru', 'lstm'\)"),
    ('bad_flow', dict(attention='bahdanu'), r"model.attention='bahdanu' is not one of"),
    ('bad_score', dict(attention_score='cosine'), r"model.attention_score='cosine' is not one of"),
    ('feed_bahdanau', dict(attention='bahdanau', input_feeding=True), 'input feeding exists only in the luong'),
    ('copy_mismatch', dict(bridge='copy', bidirectional=True, encoder_hidden_dim=5), 'bridge=copy needs encoder units'),
    ('init_zeros', dict(attention='none_init', bridge='zeros'), 'gives the decoder no information'),
    ('context_to_output', dict(attention='luong', context_to_output=True), 'context_to_output applies only'),
    ('size', dict(hidden_dim=0), 'hidden_dim must be positive'),
    ('location', dict(attention_score='location', max_src_len=0), 'location needs model.max_src_len'),
  )
  def test_validation_errors(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      _config(**kwargs).validate()

  def test_from_dict_rejects_unknown_fields(self):
    with self.assertRaisesRegex(ValueError, r"Unknown model field\(s\) \['hiden_dim'\]; valid fields: .*hidden_dim"):
      seq2seq_config.Seq2SeqConfig.from_dict({'hiden_dim': 3})

  def test_shift_right(self):
    np.testing.assert_array_equal(models.shift_right(jnp.array([[5, 6, 3, 0]])), [[2, 5, 6, 3]])

  @parameterized.parameters(
    ('luong', 'general', False, 'lstm'), ('bahdanau', 'additive', False, 'gru'), ('luong', 'dot', True, 'lstm')
  )
  def test_remat_changes_no_gradient(self, flow, score, feed, cell):
    """model.remat recomputes the recurrences in the backward pass (layer-wise and step-scanned decoders alike)."""
    kw = dict(attention=flow, attention_score=score, input_feeding=feed, cell=cell, bidirectional=True)
    plain, remat = models.Seq2Seq(_config(**kw)), models.Seq2Seq(_config(remat=True, **kw))
    inputs, mask, targets = _batch()
    variables = _random_variables(plain, inputs, mask, targets)
    grad = lambda m: jax.jit(jax.grad(lambda v: (m.apply(v, inputs, mask, targets) ** 2).mean()))(variables)
    chex.assert_trees_all_close(grad(remat), grad(plain), atol=1e-6)

  def test_bfloat16_compute_keeps_float32_params_and_logits(self):
    model = models.Seq2Seq(_config(dtype='bfloat16', attention='luong', attention_score='general'))
    inputs, mask, targets = _batch()
    variables = _random_variables(model, inputs, mask, targets)
    self.assertTrue(all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables)))
    logits = jax.jit(model.apply)(variables, inputs, mask, targets)
    self.assertEqual(logits.dtype, jnp.float32)
    reference = jax.jit(models.Seq2Seq(_config(attention='luong', attention_score='general')).apply)(
      variables, inputs, mask, targets
    )
    self.assertGreater(float(jnp.abs(logits - reference).max()), 0.0)  # the compute really is bfloat16
    np.testing.assert_allclose(logits, reference, atol=0.15 * float(jnp.abs(reference).max()))


class ScheduledSamplingTest(parameterized.TestCase):
  """Seq2Seq.teacher_forcing with a teacher-forcing ratio (Bengio et al. 2015)."""

  @parameterized.named_parameters(
    ('none_init', dict(attention='none_init')),
    ('none_concat', dict(attention='none_concat', context_to_output=True, embed_to_output=True)),
    ('bahdanau_gru', dict(attention='bahdanau', attention_score='additive', cell='gru')),
    ('luong_feed', dict(attention='luong', attention_score='general', input_feeding=True, embed_to_output=True)),
    ('coverage', dict(attention='bahdanau', attention_score='additive', coverage=True)),
  )
  def test_ratio_one_is_teacher_forcing(self, kw):
    """The scan of whole steps at ratio 1 gives the teacher-forced logits, loss and gradients."""
    model = models.Seq2Seq(_config(**kw))
    inputs, mask, targets = _batch()
    variables = _random_variables(model, inputs, mask, targets)
    rngs = {'dropout': jax.random.PRNGKey(5)}
    tf = lambda v, **r: model.apply(v, inputs, mask, targets, rngs=rngs, method=models.Seq2Seq.teacher_forcing, **r)
    plain, sampled = tf(variables), tf(variables, ratio=jnp.float32(1.0))
    np.testing.assert_allclose(sampled.logits, plain.logits, atol=1e-5, rtol=1e-5)
    if plain.attention is not None:
      np.testing.assert_allclose(sampled.attention, plain.attention, atol=1e-6)
    loss = lambda v, **r: jnp.mean(jax.nn.log_softmax(tf(v, **r).logits) * jax.nn.one_hot(targets, 13))
    g_plain = jax.grad(loss)(variables)
    g_sampled = jax.grad(lambda v: loss(v, ratio=jnp.float32(1.0)))(variables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), g_sampled, g_plain)

  @parameterized.parameters('bahdanau', 'luong', 'none_concat')
  def test_ratio_zero_feeds_the_greedy_decoders_own_prefixes(self, flow):
    """At ratio 0 every step reads the model's previous argmax: the argmax of each step is greedy decoding's
    token (beam_search with beam 1), up to its EOS."""
    from s2s_jax import decode  # pylint: disable=g-import-not-at-top
    from s2s_jax import steps  # pylint: disable=g-import-not-at-top

    kw = dict(attention=flow, attention_score='additive' if flow == 'bahdanau' else 'general')
    model = models.Seq2Seq(_config(**kw))
    inputs, mask, targets = _batch(1)
    variables = _random_variables(model, inputs, mask, targets, seed=3)
    out = model.apply(
      variables,
      inputs,
      mask,
      targets,
      ratio=jnp.float32(0.0),
      rngs={'dropout': jax.random.PRNGKey(0)},
      method=models.Seq2Seq.teacher_forcing,
    )
    own = np.asarray(out.logits.at[..., 0].set(-jnp.inf).argmax(-1))
    options = decode.DecodeOptions(beam_size=1, max_len=T, length_alpha=0.0)
    batch = {'inputs': inputs, 'inputs_mask': mask}
    greedy, _ = steps.predict_step(variables['params'], batch, model=model, options=options)
    greedy = np.asarray(greedy[:, 0])
    for b in range(B):
      n = int(np.argmax(greedy[b] == 3)) + 1 if (greedy[b] == 3).any() else T
      np.testing.assert_array_equal(own[b, :n], greedy[b, :n])

  def test_schedules(self):
    from s2s_jax import config_checks  # pylint: disable=g-import-not-at-top
    from s2s_jax import config_lib  # pylint: disable=g-import-not-at-top
    from s2s_jax import optim  # pylint: disable=g-import-not-at-top

    o = config_lib.base_config().optim
    self.assertIsNone(optim.make_teacher_forcing(o))  # ratio 1: plain teacher forcing, its fast paths
    o.update(teacher_forcing='linear', teacher_forcing_ratio=1.0, teacher_forcing_k=0.1, teacher_forcing_floor=0.2)
    schedule = optim.make_teacher_forcing(o)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 20)], [1.0, 0.5, 0.2], atol=1e-6)
    o.update(teacher_forcing='exponential', teacher_forcing_k=0.5, teacher_forcing_floor=0.0)
    np.testing.assert_allclose(float(optim.make_teacher_forcing(o)(3)), 0.125, atol=1e-6)
    o.update(teacher_forcing='inverse_sigmoid', teacher_forcing_k=10.0)
    np.testing.assert_allclose(float(optim.make_teacher_forcing(o)(0)), 10 / 11, atol=1e-6)
    for fields, message in (
      (dict(teacher_forcing_ratio=1.5), r'optim.teacher_forcing_ratio must be in \[0.0, 1.0\]'),
      (dict(teacher_forcing='linear', teacher_forcing_k=0.0), "teacher_forcing='linear' needs .* > 0"),
      (dict(teacher_forcing='exponential', teacher_forcing_k=1.0), 'needs optim.teacher_forcing_k in \\(0, 1\\)'),
      (dict(teacher_forcing='inverse_sigmoid', teacher_forcing_k=0.5), 'needs optim.teacher_forcing_k >= 1'),
      (dict(teacher_forcing='cosine'), "optim.teacher_forcing='cosine' is not one of"),
    ):
      config = config_lib.base_config()
      config.optim.update(fields)
      with self.assertRaisesRegex(ValueError, message):
        config_checks.validate(config)


if __name__ == '__main__':
  absltest.main()
