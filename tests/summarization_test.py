"""Summarization: the AESLC builder and its multi-reference test split, the pointer-generator and coverage model
options, the lead baselines, and a tiny end-to-end run on a slice of the real archive (train, evaluate, translate)."""

import functools
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import shared_data
import testutil

from s2s_jax import config_checks
from s2s_jax import decoder
from s2s_jax import evaluation
from s2s_jax import metrics
from s2s_jax import models
from s2s_jax import seq2seq_config
from s2s_jax import steps
from s2s_jax import train
from s2s_jax.data import corpora
from s2s_jax.data import pipeline
from s2s_jax.data import raw_files
from s2s_jax.data.datasets import aeslc as aeslc_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments.summarization import aeslc  # pylint: disable=g-import-not-at-top,wrong-import-position

B, S, T, V = 3, 7, 5, 13
LENGTHS = [7, 3, 5]


class AeslcFormatTest(absltest.TestCase):
  def test_parse_dev_file(self):
    text = (
      'Hi Phillip,  This is to confirm\nour meeting.\n\n@subject\nConfirmation: Meeting 10/30\n\n'
      '@ann0\nmeeting confirmation\n\n@ann1\n meeting  confirmed \n@ann2\nconfirm meeting\n'
    )
    record = aeslc_spec.parse_aeslc(text)
    self.assertEqual(record['source'], 'Hi Phillip, This is to confirm our meeting.')
    self.assertEqual(record['target'], 'Confirmation: Meeting 10/30')
    self.assertEqual(record['references'], ['meeting confirmation', 'meeting confirmed', 'confirm meeting'])

  def test_parse_train_file_and_errors(self):
    self.assertEqual(aeslc_spec.parse_aeslc('body\n@subject\nsubj\n')['references'], [])
    with self.assertRaisesRegex(ValueError, 'x.subject: no @subject line'):
      aeslc_spec.parse_aeslc('just a body\n', 'x.subject')

  def test_validation_split_is_a_stable_five_percent(self):
    stems = [f'user-{i}_inbox_{i * 7}' for i in range(4000)]
    share = sum(aeslc_spec.aeslc_split(s) == 'validation' for s in stems) / len(stems)
    self.assertBetween(share, 0.03, 0.07)
    self.assertEqual([aeslc_spec.aeslc_split(s) for s in stems[:50]], [aeslc_spec.aeslc_split(s) for s in stems[:50]])


def _slice_archive(folder: str, num_train: int = 120, num_dev: int = 24) -> str:
  """The first emails of each folder of the real archive, packed like it (a tiny real AESLC)."""
  source = os.path.join(raw_files.default_data_root(), 'aeslc', aeslc_spec.ARCHIVE)
  counts = {'train': 0, 'dev': 0}
  limits = {'train': num_train, 'dev': num_dev}
  out_path = os.path.join(folder, aeslc_spec.ARCHIVE)
  with tarfile.open(source, 'r:gz') as src, tarfile.open(out_path, 'w:gz') as dst:
    for member in src:
      split = os.path.basename(os.path.dirname(member.name))
      if member.isfile() and split in counts and counts[split] < limits[split]:
        counts[split] += 1
        dst.addfile(member, io.BytesIO(src.extractfile(member).read()))
  return out_path


def _tiny_config(manual_dir: str, data_dir: str):
  config = aeslc.get_config('size=tiny')
  config.data.update(manual_dir=manual_dir, data_dir=data_dir, max_vocab_size=400)
  return config


@pytest.mark.slow  # prepares a slice of AESLC and trains on it (about 40 s): the fast tier is near its 600 s budget
class AeslcSliceTest(absltest.TestCase):
  """The builder, the references and a tiny training run on a slice of ../shared/data/aeslc."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.raw = os.path.join(cls.root, 'raw')
    os.makedirs(cls.raw)

  def setUp(self):
    super().setUp()
    shared_data.require(self, 'aeslc', aeslc_spec.ARCHIVE)
    if not os.path.exists(os.path.join(self.raw, aeslc_spec.ARCHIVE)):
      _slice_archive(self.raw)
    self.config = _tiny_config(self.raw, os.path.join(self.root, 'data'))

  def test_splits_and_references(self):
    pairs = corpora.load_pairs(aeslc_spec.SPEC, self.config.data)
    self.assertEqual(sorted(pairs), ['test', 'train', 'validation'])
    self.assertLen(pairs['test'], 24)
    self.assertLen(pairs['train'] + pairs['validation'], 120)
    self.assertTrue(all(source and target for source, target in pairs['test']))
    refs = corpora.load_references(aeslc_spec.SPEC, self.config.data)
    self.assertEqual(sorted(refs), ['test'])
    self.assertLen(refs['test'], 3)
    self.assertTrue(all(len(stream) == 24 for stream in refs['test']))
    # The references are the annotations, not the email's own subject line.
    self.assertNotEqual(refs['test'][0], [target for _, target in pairs['test']])
    data = pipeline.prepare(self.config.data)
    self.assertIs(data.frontend, data.tgt_vocab)  # data.shared_vocab
    self.assertEqual(data.splits['test'].reference_streams(), refs['test'])
    self.assertEqual(data.splits['validation'].reference_streams(), [data.splits['validation'].targets])
    self.assertEqual(data.report['splits']['test']['references_per_example'], 3)

  def test_missing_archive_names_the_folder(self):
    self.config.data.manual_dir = os.path.join(self.root, 'nowhere')
    with self.assertRaisesRegex(FileNotFoundError, r'enron_subject_line\.tar\.gz'):
      corpora.load_pairs(aeslc_spec.SPEC, self.config.data)

  def test_corrupt_archive_fails_loudly(self):
    bad = os.path.join(self.root, 'bad')
    os.makedirs(bad, exist_ok=True)
    with open(os.path.join(bad, aeslc_spec.ARCHIVE), 'wb') as f:
      f.write(b'\x1f\x8b not really gzip')
    self.config.data.manual_dir = bad
    with self.assertRaisesRegex(ValueError, 'cannot read the archive'):
      corpora.load_pairs(aeslc_spec.SPEC, self.config.data)

  def test_lead_baselines(self):
    self.assertEqual(evaluation.first_sentence('Hi all.  Meeting at 3? Yes.'), 'Hi all.')
    self.assertEqual(evaluation.first_sentence('no end mark here'), 'no end mark here')
    self.assertEqual(evaluation.first_words('a b  c d', 3), 'a b c')
    out = os.path.join(self.create_tempdir().full_path, 'lead.json')
    result = _run(
      'scripts/lead_baseline.py',
      '--config=experiments/summarization/aeslc.py:size=tiny',
      f'--config.data.manual_dir={self.raw}',
      f'--config.data.data_dir={self.root}/data',
      '--num_words=4,8',
      f'--json={out}',
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(out) as f:
      scores = json.load(f)
    self.assertEqual(scores['num_references'], 3)
    self.assertEqual(sorted(k for k in scores if k.startswith('lead')), ['lead_4', 'lead_8', 'lead_sentence'])
    for name in ('lead_4', 'lead_8', 'lead_sentence'):
      self.assertBetween(scores[name]['rouge1'], 0.0, 100.0)
      self.assertGreaterEqual(scores[name]['rouge1_max'], scores[name]['rouge1'])
    # The annotators' agreement: each annotator against the other two, averaged over the three.
    refs = corpora.load_references(aeslc_spec.SPEC, self.config.data)['test']
    each = [metrics.rouge(refs[k], refs[:k] + refs[k + 1 :]) for k in range(3)]
    for key in ('rouge1', 'rouge2', 'rougeL', 'rougeL_max'):
      self.assertAlmostEqual(scores['human'][key], sum(e[key] for e in each) / 3, places=6)

  def test_trains_evaluates_and_translates(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    self.config.num_train_steps = 20
    train.train_and_evaluate(self.config, workdir)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      result = json.load(f)
    for key in ('rouge1', 'rouge2', 'rougeL', 'rouge1_max'):
      self.assertBetween(result[key], 0.0, 100.0)
    self.assertEqual(result['num_sentences'], 24)
    evaluated = _run('-m', 's2s_jax.evaluate', f'--workdir={workdir}', '--split=test', '--name=again', '--beam_size=2')
    self.assertEqual(evaluated.returncode, 0, evaluated.stderr[-3000:])
    with open(os.path.join(workdir, 'eval_again.json')) as f:
      self.assertEqual(json.load(f)['beam_size'], 2)
    translated = _run(
      '-m',
      's2s_jax.translate',
      f'--workdir={workdir}',
      stdin='Please send me the gas report for March by Friday.\n\nThanks.\n',
    )
    self.assertEqual(translated.returncode, 0, translated.stderr[-3000:])
    self.assertLen(translated.stdout.splitlines(), 3)


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
  return testutil.run(*args, stdin=stdin)


def _batch(seed=0):
  rng = np.random.RandomState(seed)
  mask = (np.arange(S)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
  inputs = rng.randint(4, V, (B, S)) * mask
  inputs[0, :3] = 5  # a repeated source token: its copy probability sums over positions
  return jnp.asarray(inputs), jnp.asarray(mask), jnp.asarray(rng.randint(4, V, (B, T)))


def _model(**kw):
  base = dict(
    src_vocab_size=V,
    tgt_vocab_size=V,
    embed_dim=6,
    hidden_dim=8,
    num_layers=1,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    pointer_generator=True,
    coverage=True,
  )
  base.update(kw)
  return models.Seq2Seq(seq2seq_config.Seq2SeqConfig(**base))


def _variables(model, *args, gate_bias=None):
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  rng = np.random.RandomState(0)
  variables = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.randn(*s.shape), s.dtype), shapes)
  if gate_bias is not None:
    gate = variables['params']['decoder']['gen_gate']
    gate['kernel'] = jnp.zeros_like(gate['kernel'])
    gate['bias'] = jnp.full_like(gate['bias'], gate_bias)
  return variables


def _stepped(model, variables, inputs, mask, targets):
  return testutil.step_by_step(model, variables, inputs, mask, targets)


class PointerGeneratorTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('bahdanau_additive', dict()),
    ('luong_concat_feed', dict(attention='luong', attention_score='concat', input_feeding=True, num_layers=2)),
    ('bahdanau_general_no_coverage', dict(attention_score='general', coverage=False)),
    ('bahdanau_additive_coverage_only', dict(pointer_generator=False)),
  )
  def test_teacher_forcing_equals_step_by_step(self, kw):
    model = _model(**kw)
    inputs, mask, targets = _batch()
    variables = _variables(model, inputs, mask, targets)
    (logits, attn), (stepped, state) = jax.jit(
      lambda v: (
        model.apply(v, inputs, mask, targets, return_attention=True),
        _stepped(model, v, inputs, mask, targets),
      )
    )(variables)
    chex.assert_tree_all_finite(logits)
    np.testing.assert_allclose(stepped, logits, atol=1e-5, rtol=1e-5)
    if model.cfg.pointer_generator:  # log-probabilities of a normalised distribution
      np.testing.assert_allclose(jnp.exp(logits).sum(-1), 1.0, atol=1e-5)
    if model.cfg.coverage:  # the state's coverage is the sum of every step's weights
      np.testing.assert_allclose(state['coverage'], attn.sum(1), atol=1e-5)

  def test_gate_extremes(self):
    inputs, mask, targets = _batch()
    model = _model()
    copy_only = _variables(model, inputs, mask, targets, gate_bias=-60.0)
    logits, attn = model.apply(copy_only, inputs, mask, targets, return_attention=True)
    probs = np.asarray(jnp.exp(logits))
    expected = np.zeros_like(probs)
    for b in range(B):
      for s in range(S):
        if mask[b, s]:
          expected[b, :, inputs[b, s]] += np.asarray(attn[b, :, s])
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    vocab_only = _variables(model, inputs, mask, targets, gate_bias=60.0)
    logits = model.apply(vocab_only, inputs, mask, targets)
    plain = _model(pointer_generator=False)
    params = dict(vocab_only['params'])
    params['decoder'] = {k: v for k, v in params['decoder'].items() if k != 'gen_gate'}
    reference = plain.apply({'params': params}, inputs, mask, targets)
    np.testing.assert_allclose(logits, jax.nn.log_softmax(reference), atol=1e-4)

  def test_copy_distribution(self):
    attn = jnp.array([[[0.5, 0.25, 0.25, 0.0]]])
    ids = jnp.array([[7, 5, 7, 0]])
    dist = decoder.copy_distribution(attn, ids, 9)
    np.testing.assert_allclose(dist[0, 0], [0, 0, 0, 0, 0, 0.25, 0, 0.75, 0])

  def test_coverage_loss(self):
    attn = jnp.array([[[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]]])  # coverage before each step: [0,0], [1,0], [1.5,0.5]
    weights = jnp.array([[1.0, 1.0, 1.0]])
    self.assertAlmostEqual(float(steps.coverage_loss_sum(attn, weights)), 0.0 + 0.5 + 0.7, places=6)
    self.assertAlmostEqual(float(steps.coverage_loss_sum(attn, weights.at[0, 2].set(0.0))), 0.5, places=6)

  def test_coverage_loss_changes_the_gradient_only(self):
    inputs, mask, targets = _batch()
    model = _model()
    variables = _variables(model, inputs, mask, targets)
    batch = {'inputs': inputs, 'inputs_mask': mask, 'targets': targets}
    state = steps.TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      tx=optax.sgd(0.1),
      rng=jax.random.PRNGKey(0),
      log_sums=steps.empty_log_sums(),
    )
    step = lambda weight: jax.jit(functools.partial(steps.train_step, coverage_loss_weight=weight, axis_name=None))
    plain, plain_sums = step(0.0)(state, batch)
    covered, covered_sums = step(1.0)(state, batch)
    self.assertAlmostEqual(float(plain_sums['loss_sum']), float(covered_sums['loss_sum']), places=5)
    diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), plain.params, covered.params)
    self.assertGreater(max(jax.tree.leaves(diff)), 1e-6)

  @parameterized.parameters(
    (dict(attention='none_concat', pointer_generator=True), 'need attention weights'),
    (dict(attention_score='general', pointer_generator=False), 'coverage feeds the coverage vector'),
  )
  def test_model_validation(self, kw, message):
    with self.assertRaisesRegex(ValueError, message):
      _model(**kw).cfg.validate()

  def test_config_validation(self):
    config = aeslc.get_config('size=tiny')
    config_checks.validate(config)
    config.data.shared_vocab = False
    with self.assertRaisesRegex(ValueError, 'data.shared_vocab=True'):
      config_checks.validate(config)
    config = aeslc.get_config('size=tiny')
    config.model.coverage = False
    with self.assertRaisesRegex(ValueError, 'coverage_loss_weight > 0 needs model.coverage=True'):
      config_checks.validate(config)


if __name__ == '__main__':
  absltest.main()
