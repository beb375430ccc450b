"""Tests of sequence-level training (s2s_jax/sequence_loss.py, steps._risk_sum): the costs against sacreBLEU, the
expected-risk gradient against a hand-computed case, a reference-only candidate set, token weight 1 = teacher
forcing, the config's checks."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import sacrebleu
import steps_test  # pylint: disable=g-bad-import-order  (the tiny model and batch of the steps' tests)
import testutil
import train_test  # pylint: disable=g-bad-import-order

from s2s_jax import checkpointing
from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import optim
from s2s_jax import sequence_loss
from s2s_jax import steps
from s2s_jax import train
from s2s_jax.data import vocab as vocab_lib

jax.config.update('jax_numpy_rank_promotion', 'raise')

PAD, EOS = 0, 3


def _row(ids, width):
  """ids, then EOS, then PAD up to `width` (no EOS when ids fill it)."""
  row = list(ids) + [EOS] if len(ids) < width else list(ids)
  return row + [PAD] * (width - len(row))


def _sacre_bleu_plus_one(hyp, ref):
  metric = sacrebleu.BLEU(tokenize='none', smooth_method='add-k', smooth_value=1)
  words = lambda ids: ' '.join(f'w{i}' for i in ids)
  return metric.sentence_score(words(hyp), [words(ref)]).score / 100.0


class CostTest(parameterized.TestCase):
  def test_bleu_cost_equals_sacrebleu_add_one_on_the_ids(self):
    rng = np.random.RandomState(0)
    width = 14
    pairs = [([4, 5, 6, 7], [4, 5, 6, 7]), ([4, 4, 4, 4], [4, 5]), ([], [4, 5]), ([9], [9]), ([5, 4], [4, 5])]
    pairs.append((list(range(4, 4 + width)), [4, 5, 6]))  # no EOS: the whole row is the hypothesis
    for _ in range(40):  # small vocabulary: repeated n-grams, clipping, partial matches
      pairs.append(tuple(list(rng.randint(4, 9, rng.randint(0, 13))) for _ in range(2)))
    hyp = np.array([_row(h, width) for h, _ in pairs], np.int32)
    ref = np.array([_row(r, width) for _, r in pairs], np.int32)
    cost = np.asarray(jax.jit(sequence_loss.bleu_cost)(hyp, ref))
    want = np.array([1.0 - _sacre_bleu_plus_one(h, r) for h, r in pairs])
    np.testing.assert_allclose(cost, want, atol=2e-6)
    self.assertEqual(cost[0], 0.0)  # the reference itself costs exactly 0
    self.assertEqual(cost[2], 1.0)  # an empty hypothesis costs 1
    self.assertTrue(np.any((want > 0.05) & (want < 0.95)))  # the cases are not all trivial

  def test_chrf_cost_equals_sacrebleu_on_the_detokenised_texts(self):
    counts = vocab_lib.count_tokens(['a small dog runs', 'the man sits on a bench'], 'word')
    tgt_vocab = vocab_lib.from_counts(counts, 'word')
    ids = lambda text: tgt_vocab.encode(text)
    texts = [('a small dog runs', 'a dog runs'), ('the man sits', 'a man sits on a bench'), ('dog', 'dog')]
    width = 9
    hyp = np.array([_row(ids(h), width) for h, _ in texts], np.int32)
    ref = np.array([_row(ids(r), width) for _, r in texts], np.int32)
    settings = sequence_loss.Settings(4, 'beam', 'chrf', model=None, tgt_vocab=tgt_vocab)
    cost = np.asarray(jax.jit(functools.partial(sequence_loss.costs, settings))(hyp[:, None], ref))[:, 0]
    want = [1.0 - sacrebleu.sentence_chrf(h, [r]).score / 100.0 for h, r in texts]
    np.testing.assert_allclose(cost, want, rtol=1e-6)
    self.assertEqual(cost[2], 0.0)

  def test_duplicates_count_once(self):
    cand = np.array([[[4, 3, 0], [4, 3, 0], [5, 3, 0], [4, 3, 0], [5, 5, 3]]], np.int32)
    np.testing.assert_array_equal(sequence_loss.first_occurrences(cand), [[True, False, True, False, True]])


class RiskTest(parameterized.TestCase):
  def test_expected_risk_and_its_gradient_by_hand(self):
    """Q = softmax(alpha logp); d R / d logp_i = alpha Q_i (cost_i - R)."""
    logp = jnp.log(jnp.array([[0.5, 0.25, 0.25, 0.125]]))
    cost = jnp.array([[0.0, 1.0, 0.5, 0.9]])
    keep = jnp.array([[True, True, True, False]])  # the last is a duplicate: out of the set
    for alpha in (1.0, 2.0):
      q = np.array([0.5, 0.25, 0.25]) ** alpha
      q /= q.sum()
      risk = float(q @ [0.0, 1.0, 0.5])
      want_grad = alpha * q * (np.array([0.0, 1.0, 0.5]) - risk)
      risk_of = functools.partial(lambda lp, a: sequence_loss.expected_risk(lp, cost, keep, a).sum(), a=alpha)
      got, grad = jax.value_and_grad(risk_of)(logp)
      self.assertAlmostEqual(float(got), risk, places=6)
      np.testing.assert_allclose(grad[0, :3], want_grad, atol=1e-7)
      self.assertEqual(float(grad[0, 3]), 0.0)
    # alpha = 1: Q = (2/3, 1/3, 1/3) / (4/3) -> R = 0.25 + 0.125 = 0.375
    self.assertAlmostEqual(float(sequence_loss.expected_risk(logp, cost, keep, 1.0)[0]), 0.375, places=6)

  def test_risk_gradient_on_a_toy_model_is_the_chain_rule_of_the_hand_gradient(self):
    """On the tiny model (dropout off): grad R = sum_i alpha Q_i (cost_i - R) grad log p(u_i | x)."""
    model = steps_test._model()  # pylint: disable=protected-access
    batch = steps_test._ragged_batch(batch_size=2, tgt_len=6)  # pylint: disable=protected-access
    params = jax.jit(model.init)(jax.random.PRNGKey(0), batch['inputs'], batch['inputs_mask'], batch['targets'])
    params = params['params']
    ref_ids = [5, 6, 7, 8, 9]
    ref = np.array([_row(ref_ids, 6)], np.int32)
    cands = np.array([ref[0], _row(ref_ids[:3], 6), _row([5, 6, 8, 9, 7], 6), _row([4], 6)], np.int32)
    inputs, mask = np.repeat(batch['inputs'][:1], 4, 0), np.repeat(batch['inputs_mask'][:1], 4, 0)
    cost = sequence_loss.bleu_cost(cands, np.repeat(ref, 4, 0))[None]
    alpha = 1.5

    def logps(p):  # [4]: log p(u_i | x) of every candidate
      return sequence_loss.sequence_log_probs(model.apply({'params': p}, inputs, mask, cands), cands)

    def risk(p):
      return sequence_loss.expected_risk(logps(p)[None], cost, jnp.ones((1, 4), bool), alpha)[0]

    lp = np.asarray(jax.jit(logps)(params), np.float64)
    q = np.exp(alpha * lp - np.max(alpha * lp))
    q /= q.sum()
    r = float(q @ np.asarray(cost[0]))
    self.assertAlmostEqual(float(jax.jit(risk)(params)), r, places=5)
    coeff = alpha * q * (np.asarray(cost[0]) - r)  # d R / d log p(u_i | x), by hand
    want = jax.tree.map(lambda jac: np.tensordot(coeff, np.asarray(jac), axes=1), jax.jit(jax.jacrev(logps))(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), jax.jit(jax.grad(risk))(params), want)
    self.assertGreater(max(float(jnp.abs(g).max()) for g in jax.tree.leaves(want)), 1e-4)


def _state_and_settings(cost='bleu', source='beam', dropout=0.0):
  model = steps_test._model(dropout_rate=dropout)  # pylint: disable=protected-access
  batch = steps_test._ragged_batch()  # pylint: disable=protected-access
  tx = optax.adam(1e-2)
  state = steps.create_train_state(jax.random.PRNGKey(0), model, tx, batch['inputs'].shape[1], 6)
  return model, batch, state, sequence_loss.Settings(3, source, cost, model)


class StepTest(parameterized.TestCase):
  def test_a_reference_only_candidate_set_gives_exactly_zero_loss_and_gradient(self):
    model, batch, state, settings = _state_and_settings(dropout=0.3)
    refs = np.asarray(batch['targets'])
    only_refs = np.repeat(refs[:, None], settings.candidates, axis=1)
    risk = functools.partial(
      steps._risk_sum,  # pylint: disable=protected-access
      apply_fn=model.apply,
      batch=batch,
      rng=jax.random.PRNGKey(1),
      s=settings,
      sharpness=1.0,
      candidates=only_refs,
    )
    value, grads = jax.jit(jax.value_and_grad(risk))(state.params)
    self.assertEqual(float(value), 0.0)
    for g in jax.tree.leaves(grads):
      np.testing.assert_array_equal(g, np.zeros_like(g))
    # Searched candidates differ from the references: a real, non-zero risk and gradient.
    value, grads = jax.jit(jax.value_and_grad(functools.partial(risk, candidates=None)))(state.params)
    self.assertGreater(float(value), 0.0)
    self.assertGreater(max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)), 0.0)

  def test_token_weight_one_is_teacher_forcing_and_below_one_is_not(self):
    _, batch, state, settings = _state_and_settings(source='beam', dropout=0.3)
    step = lambda **kw: jax.jit(functools.partial(steps.train_step, axis_name=None, **kw))(state, batch)
    plain, plain_sums = step()
    one = jnp.float32(1.0)
    mixed, mixed_sums = step(sequence=settings, sequence_sharpness=one, sequence_token_weight=one)
    jax.tree.map(np.testing.assert_array_equal, mixed.params, plain.params)
    np.testing.assert_array_equal(mixed_sums['loss_sum'], plain_sums['loss_sum'])
    risky, _ = step(sequence=settings, sequence_sharpness=jnp.float32(1.0), sequence_token_weight=jnp.float32(0.3))
    differ = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(risky.params), jax.tree.leaves(plain.params))]
    self.assertTrue(any(differ))

  def test_the_train_step_fn_of_a_config_runs_the_risk_and_is_deterministic(self):
    config = config_lib.base_config()
    config.optim.update(sequence_loss='risk', sequence_candidates=2, sequence_source='sample')
    model, batch, state, _ = _state_and_settings()
    settings = sequence_loss.settings(config, model)
    self.assertEqual((settings.candidates, settings.source, settings.cost), (2, 'sample', 'bleu'))
    hp = optim.hyperparameters(config)
    self.assertEqual((float(hp['sequence_sharpness']), float(hp['sequence_token_weight'])), (1.0, np.float32(0.3)))
    step = jax.jit(
      functools.partial(
        steps.train_step,
        axis_name=None,
        sequence=settings,
        sequence_sharpness=hp['sequence_sharpness'],
        sequence_token_weight=hp['sequence_token_weight'],
      )
    )
    a, _ = step(state, batch)
    b, _ = step(state, batch)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    config.optim.sequence_cost = 'chrf'
    with self.assertRaisesRegex(ValueError, 'needs the target vocabulary'):
      sequence_loss.settings(config, model)


@pytest.mark.slow  # three short training runs
class FineTuneTest(absltest.TestCase):
  def test_a_sequence_level_fine_tune_stopped_and_resumed_is_exact(self):
    """From another run's parameters, risk with the chrF cost (the host callback, over the test's 8 devices): 10
    steps, stop, resume to 20 == 20 steps uninterrupted (candidates, parameters, metrics)."""
    root = self.create_tempdir().full_path
    data = f'{root}/data'
    source = testutil.random_workdir(f'{root}/source', data, seed=3)

    def config(steps):
      c = testutil.tiny_config(data, constant_lr=True, num_train_steps=steps, eval_every_steps=10)
      c.checkpoint_every_steps = 10
      c.init.from_workdir = source
      c.optim.update(sequence_loss='risk', sequence_cost='chrf', sequence_candidates=2, sequence_token_weight=0.5)
      return c

    straight, resumed = f'{root}/straight', f'{root}/resumed'
    train.train_and_evaluate(config(20), straight)
    train.train_and_evaluate(config(10), resumed)
    train.train_and_evaluate(config(20), resumed)
    a, _ = checkpointing.restore_params(straight, 'latest')
    b, _ = checkpointing.restore_params(resumed, 'latest')
    jax.tree.map(np.testing.assert_array_equal, a, b)
    records = lambda w: train_test._without_timing(train_test._records(w))  # pylint: disable=protected-access
    self.assertEqual(
      [r for r in records(resumed) if not (r['step'] == 10 and any(k.startswith('test/') for k in r))],
      records(straight),
    )
    source_params, _ = checkpointing.restore_params(source, 'best')
    moved = [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(source_params))]
    self.assertTrue(any(moved))


class ConfigTest(parameterized.TestCase):
  @parameterized.parameters(
    ('sequence_loss', 'mrt', 'optim.sequence_loss'),
    ('sequence_source', 'nbest', 'optim.sequence_source'),
    ('sequence_cost', 'ter', 'optim.sequence_cost'),
    ('sequence_candidates', 0, 'optim.sequence_candidates'),
    ('sequence_sharpness', 0.0, 'optim.sequence_sharpness'),
    ('sequence_token_weight', 1.5, 'optim.sequence_token_weight'),
  )
  def test_bad_values_fail_naming_the_field(self, field, value, name):
    config = config_lib.base_config()
    config.optim[field] = value
    with self.assertRaisesRegex(ValueError, name):
      config_checks.validate(config)


if __name__ == '__main__':
  absltest.main()
