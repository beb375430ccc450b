"""Tests of the train step (jit and pmap), optimizers, and the real train_and_evaluate with resume."""
import functools
import hashlib
import json
import os
import sys

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2s_jax import checkpointing
from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import models
from s2s_jax import optim
from s2s_jax import steps
from s2s_jax import train

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from experiments import default  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_numpy_rank_promotion', 'raise')


def _model(**kw):
  cfg = dict(src_vocab_size=12, tgt_vocab_size=10, embed_dim=8, hidden_dim=16, cell='gru', bidirectional=True,
             bridge='dense', attention='bahdanau', attention_score='additive', max_src_len=9)
  cfg.update(kw)
  return models.Seq2Seq(models.Seq2SeqConfig(**cfg))


def _ragged_batch(batch_size=16, src_len=9, tgt_len=6, seed=0):
  """Random sources and targets of different lengths, PAD-filled; a few rows are pure padding."""
  rng = np.random.RandomState(seed)
  src_lens = rng.randint(1, src_len + 1, batch_size)
  tgt_lens = rng.randint(1, tgt_len + 1, batch_size)
  src_lens[-2:] = 0
  tgt_lens[-2:] = 0
  mask = (np.arange(src_len)[None] < src_lens[:, None]).astype(np.int32)
  inputs = rng.randint(4, 12, (batch_size, src_len)) * mask
  targets = rng.randint(4, 10, (batch_size, tgt_len)) * (np.arange(tgt_len)[None] < tgt_lens[:, None])
  targets[np.arange(batch_size), np.maximum(tgt_lens - 1, 0)] = np.where(tgt_lens > 0, 3, 0)
  return {'inputs': inputs.astype(np.int32), 'inputs_mask': mask, 'targets': targets.astype(np.int32)}


class TrainStepTest(parameterized.TestCase):

  def test_overfits_one_batch(self):
    model = _model()
    state = steps.create_train_state(jax.random.PRNGKey(0), model, optax.adam(1e-2), 9, 6)
    batch = _ragged_batch()
    step = jax.jit(functools.partial(steps.train_step, axis_name=None))
    first = None
    for _ in range(150):
      state, sums = step(state, batch)
      loss = float(sums['loss_sum'] / sums['num_tokens'])
      first = loss if first is None else first
    self.assertGreater(first, 1.5)
    self.assertLess(loss, 0.02)

  def test_pmap_on_8_devices_equals_jit_on_one(self):
    """Global token normalisation: the update does not depend on how (ragged) tokens split over devices."""
    self.assertEqual(jax.local_device_count(), 8, 'tests/conftest.py forces 8 host devices')
    model = _model()
    tx = optax.sgd(0.5)
    batch = _ragged_batch(batch_size=16)
    state = steps.create_train_state(jax.random.PRNGKey(0), model, tx, 9, 6)
    jit_state, jit_sums = jax.jit(functools.partial(steps.train_step, axis_name=None))(state, batch)
    p_step = jax.pmap(steps.train_step, axis_name='batch')
    p_state, p_sums = p_step(flax.jax_utils.replicate(state), steps.shard_batch(batch))
    p_state = flax.jax_utils.unreplicate(p_state)
    chex_close = functools.partial(np.testing.assert_allclose, atol=1e-5, rtol=1e-5)
    jax.tree.map(chex_close, p_state.params, jit_state.params)
    for k in ('loss_sum', 'correct_sum', 'num_tokens', 'grad_norm'):
      chex_close(flax.jax_utils.unreplicate(p_sums)[k], jit_sums[k])
    # And the step really moved the parameters.
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), jit_state.params, state.params)
    self.assertGreater(max(jax.tree.leaves(moved)), 1e-3)

  def test_gradient_accumulation_equals_the_full_batch(self):
    model = _model()
    batch = _ragged_batch(batch_size=16)
    state = steps.create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.5), 9, 6)
    full, full_sums = jax.jit(functools.partial(steps.train_step, axis_name=None))(state, batch)
    acc, acc_sums = jax.jit(functools.partial(steps.train_step, axis_name=None, grad_accum_steps=4))(state, batch)
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5, rtol=1e-5), acc.params, full.params)
    np.testing.assert_allclose(acc_sums['loss_sum'], full_sums['loss_sum'], rtol=1e-5)

  def test_golden_first_step_loss(self):
    """The first loss of the tiny default config, pinned.

    Update the golden value only after an intended change of initialisation, model math or data generation
    (and say so in the commit); an unintended change here means results are no longer reproducible.
    """
    config = default.get_config('size=tiny')
    config.model.update(src_vocab_size=60, tgt_vocab_size=15, max_src_len=config.data.max_src_len)
    model = models.Seq2Seq(config_lib.model_config(config))
    state = steps.create_train_state(jax.random.PRNGKey(0), model, optim.make_optimizer(config.optim, 10), 12, 6)
    rng = np.random.RandomState(0)
    batch = {'inputs': rng.randint(4, 60, (8, 12)).astype(np.int32), 'inputs_mask': np.ones((8, 12), np.int32),
             'targets': rng.randint(4, 15, (8, 6)).astype(np.int32)}
    _, sums = jax.jit(functools.partial(steps.train_step, axis_name=None))(state, batch)
    self.assertAlmostEqual(float(sums['loss_sum'] / sums['num_tokens']), _GOLDEN_FIRST_LOSS, places=4)

  def test_a_sentence_decodes_the_same_alone_and_in_a_padded_batch(self):
    model = _model(attention='luong', attention_score='general', input_feeding=True, cell='lstm')
    state = steps.create_train_state(jax.random.PRNGKey(3), model, optax.sgd(0.1), 9, 6)
    batch = _ragged_batch(batch_size=8, seed=1)
    options = decode.DecodeOptions(beam_size=3, max_len=7, length_alpha=0.6)
    predict = jax.jit(functools.partial(steps.predict_step, model=model, options=options))
    seqs, scores = predict(state.params, batch)
    self.assertEqual(seqs.shape, (8, 3, 7))
    lengths = batch['inputs_mask'].sum(1)
    for b in (0, 1, 2):
      n = int(lengths[b])
      alone = {'inputs': batch['inputs'][b:b + 1, :n], 'inputs_mask': batch['inputs_mask'][b:b + 1, :n],
               'targets': batch['targets'][b:b + 1]}
      seqs_b, scores_b = predict(state.params, alone)
      np.testing.assert_array_equal(seqs_b[0], seqs[b])
      np.testing.assert_allclose(scores_b[0], scores[b], atol=1e-5)

  def test_label_smoothing_raises_the_loss_of_a_confident_model(self):
    from s2s_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    logits = jnp.array([[[10.0, 0.0, 0.0]]])
    targets = jnp.array([[0]])
    weights = jnp.ones((1, 1))
    plain, nll = metrics_lib.weighted_xent(logits, targets, weights)
    smooth, nll_smooth = metrics_lib.weighted_xent(logits, targets, weights, label_smoothing=0.1)
    self.assertGreater(float(smooth), float(plain))
    self.assertAlmostEqual(float(nll), float(nll_smooth), places=6)


_GOLDEN_FIRST_LOSS = 2.7833


class ScheduleTest(parameterized.TestCase):

  def _optim(self, **kw):
    o = config_lib.base_config().optim
    o.update(kw)
    return o

  def test_warmup_then_constant(self):
    s = optim.make_schedule(self._optim(learning_rate=1.0, warmup_steps=10), 100)
    self.assertAlmostEqual(float(s(0)), 0.0)
    self.assertAlmostEqual(float(s(5)), 0.5)
    self.assertAlmostEqual(float(s(10)), 1.0)
    self.assertAlmostEqual(float(s(90)), 1.0)

  def test_rsqrt(self):
    s = optim.make_schedule(self._optim(learning_rate=1.0, warmup_steps=100, schedule='rsqrt'), 1000)
    self.assertAlmostEqual(float(s(100)), 1.0, places=5)
    self.assertAlmostEqual(float(s(400)), 0.5, places=5)

  def test_halving(self):
    s = optim.make_schedule(self._optim(learning_rate=1.0, schedule='halving', decay_start_steps=50,
                                        decay_every_steps=10), 100)
    self.assertAlmostEqual(float(s(49)), 1.0)
    self.assertAlmostEqual(float(s(60)), 0.5)
    self.assertAlmostEqual(float(s(75)), 0.25)

  def test_cosine(self):
    s = optim.make_schedule(self._optim(learning_rate=1.0, schedule='cosine'), 100)
    self.assertAlmostEqual(float(s(0)), 1.0)
    self.assertAlmostEqual(float(s(50)), 0.5, places=5)
    self.assertAlmostEqual(float(s(100)), 0.0, places=5)

  @parameterized.parameters((10.0, 0.2), (0.5, 1.0))  # (global norm of the gradient, expected scale)
  def test_global_norm_clipping(self, norm, scale):
    tx = optim.make_optimizer(self._optim(optimizer='sgd', learning_rate=1.0, grad_clip_norm=2.0), 100)
    grads = {'a': jnp.array([0.6, 0.0]) * norm, 'b': jnp.array([[0.0, 0.8]]) * norm}  # global norm = norm
    updates, _ = tx.update(grads, tx.init(grads))
    for key in grads:  # the whole gradient is scaled by clip / norm when the norm exceeds the clip, else kept
      np.testing.assert_allclose(updates[key], -scale * grads[key], rtol=1e-6)

  @parameterized.parameters('adam', 'adamw', 'sgd', 'adadelta')
  def test_every_optimizer_decreases_the_loss(self, name):
    o = self._optim(optimizer=name, learning_rate=1.0 if name == 'adadelta' else 0.05, momentum=0.9)
    tx = optim.make_optimizer(o, 100)
    params = {'w': jnp.array([3.0, -2.0])}
    opt_state = tx.init(params)
    loss = lambda p: jnp.sum(p['w'] ** 2)
    for _ in range(20):
      updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
      params = optax.apply_updates(params, updates)
    self.assertLess(float(loss(params)), 12.9)  # from 13.0 (Adadelta starts slowly by design)


def _tiny_config(data_dir, **overrides):
  config = default.get_config('size=tiny')
  config.data.data_dir = data_dir
  config.optim.schedule = 'constant'  # so a shorter first part of a resumed run has the same learning rates
  for k, v in overrides.items():
    config[k] = v
  return config


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _without_timing(records):
  return [{k: v for k, v in r.items() if k != 'wall_s' and not k.endswith('_per_s') and k != 'test/decode_s'}
          for r in records]


def _with_buckets(config, num_buckets):
  config.data.num_buckets = num_buckets
  return config


class TrainAndEvaluateTest(parameterized.TestCase):

  def test_end_to_end_writes_the_workdir_contract(self):
    workdir = self.create_tempdir().full_path
    config = _tiny_config(self.create_tempdir().full_path)
    train.train_and_evaluate(config, workdir)
    for name in ('config.json', 'provenance.json', 'data_report.json', 'metrics.jsonl', 'eval_test.json',
                 'eval_test.hyp.txt', 'DONE', 'tensorboard', 'checkpoints', 'best'):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    self.assertTrue(os.path.isabs(saved['data']['data_dir']))
    self.assertGreater(saved['model']['src_vocab_size'], 4)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      result = json.load(f)
    for key in ('bleu', 'bleu_signature', 'bleu_lc', 'chrf', 'chrf_signature', 'exact_match', 'bleu_by_src_len',
                'len_ratio', 'decode_s', 'sentences_per_s', 'num_sentences', 'beam_size', 'length_alpha',
                'checkpoint_step'):
      self.assertIn(key, result)
    self.assertEqual(result['num_sentences'], config.data.num_eval_examples)
    with open(os.path.join(workdir, 'eval_test.hyp.txt')) as f:
      self.assertLen(f.read().splitlines(), config.data.num_eval_examples)
    records = _records(workdir)
    keys = set().union(*records)
    for key in ('train/loss', 'train/perplexity', 'train/token_accuracy', 'train/learning_rate', 'train/grad_norm',
                'train/steps_per_s', 'train/target_tokens_per_s', 'eval/loss', 'eval/exact_match', 'eval/bleu',
                'test/exact_match', 'test/loss'):
      self.assertIn(key, keys)
    self.assertEqual([r['step'] for r in records if 'train/loss' in r], [10, 20, 30, 40])
    self.assertLess(records[-1]['test/loss'], 2.5)  # it learned something in 40 steps
    with open(os.path.join(workdir, 'provenance.json')) as f:
      prov = json.load(f)
    for key in ('git_sha', 'git_dirty', 'packages', 'devices', 'xla_flags', 'cpu', 'command_line', 'data_sha256',
                'tokenizer_sha256'):
      self.assertIn(key, prov)
    with open(os.path.join(workdir, 'data_report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['splits']['train']['num_examples'], 2000)
    self.assertIn('padding_fraction', report['splits']['train'])
    self.assertLen(prov['starts'], 1)
    self.assertEqual(prov['starts'][0]['from_step'], 0)
    self.assertEqual(prov['starts'][0]['git_sha'], prov['git_sha'])
    # Running again on a finished workdir does nothing and keeps the records (and is not counted as a start).
    train.train_and_evaluate(config, workdir)
    self.assertEqual(_records(workdir), records)
    with open(os.path.join(workdir, 'provenance.json')) as f:
      self.assertEqual(json.load(f)['starts'], prov['starts'])

  @parameterized.parameters(1, 3)
  def test_stop_and_resume_is_exact(self, num_buckets):
    """20 steps (mid-epoch), stop, resume to 40 == 40 steps uninterrupted: same batches, parameters, metrics."""
    data_dir = self.create_tempdir().full_path
    straight, resumed = self.create_tempdir().full_path, self.create_tempdir().full_path
    config = lambda **kw: _with_buckets(_tiny_config(data_dir, **kw), num_buckets)
    train.train_and_evaluate(config(), straight)
    train.train_and_evaluate(config(num_train_steps=20), resumed)
    self.assertEqual(checkpointing.make_manager(resumed, 2).latest_step(), 20)
    wall_before = max(r['wall_s'] for r in _records(resumed))
    train.train_and_evaluate(config(), resumed)
    self.assertEqual(checkpointing.make_manager(resumed, 2).latest_step(), 40)
    # provenance.json counts the starts; wall_s goes on from the first part's (the run's time in all its starts).
    for workdir, from_steps in ((straight, [0]), (resumed, [0, 20])):
      with open(os.path.join(workdir, 'provenance.json')) as f:
        self.assertEqual([s['from_step'] for s in json.load(f)['starts']], from_steps)
    walls = [r['wall_s'] for r in _records(resumed)]
    self.assertEqual(walls, sorted(walls))
    self.assertGreater(min(r['wall_s'] for r in _records(resumed) if r['step'] > 20), wall_before)
    a, _ = checkpointing.restore_params(straight, 'latest')
    b, _ = checkpointing.restore_params(resumed, 'latest')
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The resumed run also holds the test evaluation that ended its first part; everything else matches.
    resumed_records = [r for r in _without_timing(_records(resumed))
                       if not (r['step'] == 20 and any(k.startswith('test/') for k in r))]
    self.assertEqual(resumed_records, _without_timing(_records(straight)))

  def test_changed_config_refuses_to_resume(self):
    data_dir = self.create_tempdir().full_path
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(_tiny_config(data_dir, num_train_steps=10), workdir)
    changed = _tiny_config(data_dir, num_train_steps=20)
    changed.optim.learning_rate = 0.5
    with self.assertRaisesRegex(ValueError, r'(?s)optim.learning_rate: 0.003 -> 0.5.*--allow_config_change'):
      train.train_and_evaluate(changed, workdir)
    train.train_and_evaluate(changed, workdir, allow_config_change=True)
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 20)

  @pytest.mark.slow  # end-to-end (two training runs)
  def test_resuming_on_changed_data_refuses_and_allowed_keeps_a_history(self):
    folder = self.create_tempdir().full_path
    rng = np.random.RandomState(0)
    words = [' '.join(rng.choice(['ab', 'cd', 'ef', 'gh'], size=rng.randint(1, 5))) for _ in range(120)]
    for name, lines in (('train.tsv', words[:100]), ('dev.tsv', words[100:])):
      with open(os.path.join(folder, name), 'w') as f:
        f.writelines(f'{w}\t{w[::-1]}\n' for w in lines)
    config = lambda steps: _tiny_config(self.create_tempdir().full_path, num_train_steps=steps)
    workdir = self.create_tempdir().full_path

    def run(steps, **kwargs):
      c = config(steps)
      c.data.update(name='parallel_text', files=f'train={folder}/train.tsv;validation={folder}/dev.tsv;'
                                                f'test={folder}/dev.tsv', data_dir=os.path.join(folder, 'cache'))
      train.train_and_evaluate(c, workdir, **kwargs)
      with open(os.path.join(workdir, 'provenance.json')) as f:
        return json.load(f)

    first = run(20)
    with open(os.path.join(folder, 'train.tsv'), 'rb') as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    self.assertIn({'path': f'{folder}/train.tsv', 'sha256': digest},
                  [{k: x[k] for k in ('path', 'sha256')} for x in first['data_manifest']['files']])
    self.assertEqual(first['data_history'], [{'data_sha256': first['data_sha256'], 'from_step': 0}])
    with open(os.path.join(folder, 'train.tsv'), 'a') as f:
      f.write('ab cd\tdc ba\n')
    with self.assertRaisesRegex(ValueError, rf'The data changed since this run started \(changed: {folder}/train.tsv\)'
                                            r'.*--allow_config_change'):
      run(40)
    second = run(40, allow_config_change=True)
    self.assertNotEqual(second['data_sha256'], first['data_sha256'])
    self.assertEqual(second['data_history'], [{'data_sha256': first['data_sha256'], 'from_step': 0},
                                              {'data_sha256': second['data_sha256'], 'from_step': 20}])
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 40)

  @parameterized.parameters(('test_splits', 'test,tst', r"data.test_splits names 'tst'"),
                            ('eval_split', 'valid', r"data.eval_split names 'valid'"))
  def test_unknown_split_names_fail_before_training(self, field, value, message):
    config = _tiny_config(self.create_tempdir().full_path)
    config.data[field] = value
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, message + r", which data.name='dates' does not have; its splits are "
                                                      r'test, train, validation'):
      train.train_and_evaluate(config, workdir)
    self.assertEqual(os.listdir(workdir), [])  # nothing trained or written

  def test_batch_size_must_split_over_devices(self):
    config = _tiny_config(self.create_tempdir().full_path)
    config.data.batch_size = 12
    with self.assertRaisesRegex(ValueError, 'data.batch_size=12 must be a multiple of the device count 8'):
      train.train_and_evaluate(config, self.create_tempdir().full_path)


if __name__ == '__main__':
  absltest.main()
