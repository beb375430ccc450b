"""Tests of experiment configs: every file builds for every size, round-trips through JSON, validates and trains."""

import glob
import importlib.util
import os

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import pytest
import shared_data

from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import train
from s2s_jax import workdir as workdir_lib
from s2s_jax.data import pipeline
from s2s_jax.data import registry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(
  os.path.relpath(p, ROOT)
  for p in glob.glob(os.path.join(ROOT, 'experiments', '**', '*.py'), recursive=True)
  if not os.path.basename(p).startswith('_') and '/sweeps/' not in p and '/search/' not in p
)


def _load(path: str):
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _case_name(path: str) -> str:
  return path.replace('/', '_').replace('.py', '')


def _uses_a_corpus(path: str) -> bool:
  """Reads a corpus of ../shared/data (text or speech): slow tier (speech_test trains the speech configs fast)."""
  return bool(registry.get(_load(path).get_config('size=tiny').data.name).folder)


CORPUS_EXPERIMENTS = [p for p in EXPERIMENTS if _uses_a_corpus(p)]


class ExperimentFilesTest(parameterized.TestCase):
  def test_the_fixed_names_exist(self):
    for name in (
      'experiments/default.py',
      'experiments/tasks/copy.py',
      'experiments/tasks/reverse.py',
      'experiments/tasks/sort.py',
      'experiments/tasks/addition.py',
      'experiments/benchmarks/lstm512.py',
      'experiments/multi30k/seq2seq_lstm.py',
      'experiments/multi30k/gru_context.py',
      'experiments/multi30k/bahdanau_bigru.py',
    ):
      self.assertIn(name, EXPERIMENTS)

  @parameterized.named_parameters(*[(_case_name(p), p) for p in EXPERIMENTS])
  def test_builds_for_every_size_and_round_trips(self, path):
    module = _load(path)
    self.assertIn('python -m s2s_jax.main', module.__doc__, 'the docstring opens with the command')
    for size in config_lib.SIZES:
      config = module.get_config(f'size={size}')
      config_checks.validate(config)
      again = ml_collections.ConfigDict(config_lib.to_dict(config))
      config_checks.validate(again)
      self.assertEqual(config_lib.to_dict(again), config_lib.to_dict(config))
    self.assertEqual(config_lib.to_dict(module.get_config()), config_lib.to_dict(module.get_config(None)))
    with self.assertRaisesRegex(ValueError, r"Unknown config arg 'sise'; known: \['size'(, '\w+')*\]"):
      module.get_config('sise=tiny')

  @parameterized.parameters('seq2seq_lstm', 'gru_context', 'bahdanau_bigru')
  def test_the_tutorial_configs_are_their_published_size_at_small_and_base(self, name):
    module = _load(f'experiments/multi30k/{name}.py')  # (their docstrings say so: the published size is the real one)
    self.assertEqual(config_lib.to_dict(module.get_config('size=base')), config_lib.to_dict(module.get_config()))
    self.assertIn('`size=base` is the same as `size=small`', module.__doc__)
    self.assertEqual((module.get_config().model.embed_dim, module.get_config().model.hidden_dim), (256, 512))

  @pytest.mark.slow  # 20 steps, validation and test of each file (about 150 s of CPU in all)
  @parameterized.named_parameters(*[(_case_name(p), p) for p in EXPERIMENTS if p not in CORPUS_EXPERIMENTS])
  def test_trains_at_size_tiny(self, path):
    _train_tiny(self, path)


def _train_tiny(test: absltest.TestCase, path: str) -> None:
  config = _load(path).get_config('size=tiny')
  raw = registry.of(config.data).manual_dir(config.data)
  shared_data.require_folder(test, raw, path)
  config.data.data_dir = test.create_tempdir().full_path
  config.num_train_steps = 20
  workdir = test.create_tempdir().full_path
  train.train_and_evaluate(config, workdir)
  test.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
  # config.num_seeds > 1 trains the seeds as one program and gives each a complete workdir seed_<s>/.
  seed_dirs = [f'seed_{s}' for s in range(config.num_seeds)] if config.num_seeds > 1 else ['']
  for seed_dir in seed_dirs:
    for split in config.data.test_splits.split(','):
      test.assertTrue(os.path.exists(os.path.join(workdir, seed_dir, f'eval_{split}.json')), seed_dir or workdir)


@pytest.mark.slow
class CorpusExperimentsTest(parameterized.TestCase):
  """Experiments on real corpora train at size=tiny (slow tier: each prepares and tokenises a whole corpus)."""

  @parameterized.named_parameters(*[(_case_name(p), p) for p in CORPUS_EXPERIMENTS])
  def test_trains_at_size_tiny(self, path):
    _train_tiny(self, path)


def _config(**overrides):
  c = config_lib.base_config()
  for dotted, value in overrides.items():
    section, _, key = dotted.rpartition('__')
    (c[section] if section else c)[key] = value
  return c


class ValidationTest(parameterized.TestCase):
  def test_base_config_is_valid(self):
    config_checks.validate(config_lib.base_config())

  @parameterized.named_parameters(
    (
      'choice_attention',
      dict(model__attention='bahdanu'),
      r"model.attention='bahdanu' is not one of \('none_init', 'none_concat', 'bahdanau', 'luong'\)",
    ),
    ('choice_cell', dict(model__cell='LSTM'), r"model.cell='LSTM' is not one of \('rnn', 'gru', 'lstm'\)"),
    ('choice_optimizer', dict(optim__optimizer='adagrad'), r"optim.optimizer='adagrad' is not one of \('adam'"),
    ('choice_schedule', dict(optim__schedule='linear'), r"optim.schedule='linear' is not one of"),
    ('choice_metric', dict(eval__metric='accuracy'), r"eval.metric='accuracy' is not one of \('loss'"),
    ('choice_mode', dict(eval__mode='maximum'), r"eval.mode='maximum' is not one of \('max', 'min'\)"),
    ('choice_data', dict(data__name='wmt'), r"data.name='wmt' is not one of \('dates'"),
    (
      'choice_tokenizer',
      dict(data__tokenizer='bpe'),
      r"data.tokenizer='bpe' is not one of \('char', 'word', 'moses', 'sentencepiece'\)",
    ),
    (
      'combination',
      dict(model__attention='bahdanau', model__input_feeding=True),
      'input feeding exists only in the luong flow',
    ),
    ('dropout', dict(model__dropout_rate=1.5), r'model.dropout_rate must be in \[0.0, 1.0\), got 1.5'),
    ('beam', dict(decode__beam_size=0), r'decode.beam_size must be in \[1, 1000\], got 0'),
    ('batch', dict(data__batch_size=0), r'data.batch_size must be in \[1, 1000000\], got 0'),
    ('hidden', dict(model__hidden_dim=-4), r'model.hidden_dim must be in \[1, 65536\], got -4'),
    ('learning_rate', dict(optim__learning_rate=-1.0), r'optim.learning_rate must be in \[0.0, 1e\+38\]'),
    ('learning_rate_nan', dict(optim__learning_rate=float('nan')), r'optim.learning_rate must be in'),
    ('smoothing', dict(optim__label_smoothing=1.0), r'optim.label_smoothing must be in \[0.0, 1.0\)'),
    (
      'cadence',
      dict(log_every_steps=30, checkpoint_every_steps=100),
      'checkpoint_every_steps=100 must be a multiple of log_every_steps=30',
    ),
    (
      'accumulation',
      dict(data__batch_size=10, optim__grad_accum_steps=4),
      'must be a multiple of optim.grad_accum_steps=4',
    ),
    ('halving', dict(optim__schedule='halving'), 'halving needs optim.decay_every_steps > 0'),
    ('score_group', dict(eval__scores='bleu,meteor'), r"eval.scores item='meteor' is not one of \('bleu'"),
    ('metric_not_scored', dict(eval__metric='rouge2'), r"eval.metric='rouge2' is not computed by eval.scores="),
    ('min_len', dict(decode__min_len=64), 'decode.min_len=64 must be below the decoding length limit 64'),
    ('coverage', dict(model__attention='none_init', decode__coverage_beta=0.2), 'coverage_beta needs attention'),
    ('ngram', dict(decode__no_repeat_ngram_size=-1), r'decode.no_repeat_ngram_size must be in \[0, 100\]'),
    # values that used to pass validation and fail late, or never
    ('encoder_hidden', dict(model__encoder_hidden_dim=-8), r'model.encoder_hidden_dim must be in \[0, 65536\]'),
    ('attention_dim', dict(model__attention_dim=-1), r'model.attention_dim must be in \[0, 65536\]'),
    ('decay_factor', dict(optim__decay_factor=-1.0), r'optim.decay_factor must be in \(0.0, 1.0\]'),
    ('eps', dict(optim__eps=-1.0), r'optim.eps must be in \(0.0, 1.0\]'),
    ('b2', dict(optim__b2=5.0), r'optim.b2 must be in \[0.0, 1.0\)'),
    ('max_len', dict(decode__max_len=10**9), r'decode.max_len must be in \[0, 100000\]'),
    ('num_buckets', dict(data__num_buckets=10**6), r'data.num_buckets must be in \[0, 256\]'),
    ('max_padding', dict(data__max_padding=0.0), r'data.max_padding must be in \(0.0, 1.0\)'),
    ('weight_decay', dict(optim__weight_decay=0.01), r'optim.weight_decay=0.01 applies to optim.optimizer=adamw'),
    ('momentum', dict(optim__momentum=0.9), r'optim.momentum=0.9 applies to optim.optimizer=sgd only'),
    ('float16', dict(model__dtype='float16'), r'model.dtype=float16 needs loss scaling'),
  )
  def test_errors_name_the_field_and_the_choices(self, overrides, message):
    with self.assertRaisesRegex(ValueError, message):
      config_checks.validate(_config(**overrides))

  def test_every_numeric_field_has_a_range(self):
    flat = config_lib.flatten(config_lib.to_dict(config_lib.base_config()))
    numeric = {k for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    self.assertEqual(numeric - set(config_checks.RANGES), set())
    self.assertEqual(set(config_checks.RANGES) - numeric, set())  # no range for a field that does not exist

  def test_weight_decay_and_momentum_with_their_optimizers_are_valid(self):
    config_checks.validate(_config(optim__optimizer='adamw', optim__weight_decay=0.01))
    config_checks.validate(_config(optim__optimizer='sgd', optim__momentum=0.9))

  def test_unknown_field_lists_the_valid_ones(self):
    c = config_lib.base_config()
    c.model.hiden_dim = 3
    with self.assertRaisesRegex(
      ValueError,
      r"Unknown config field 'model.hiden_dim'; valid fields of model: .*"
      r"'model.hidden_dim'",
    ):
      config_checks.validate(c)

  def test_wrong_type(self):
    c = config_lib.base_config()
    c.unlock()
    del c.model['hidden_dim']
    c.model.hidden_dim = '128'
    with self.assertRaisesRegex(ValueError, r"'model.hidden_dim' must be of type int, got '128'"):
      config_checks.validate(c)

  def test_override_flags_are_checked_against_the_fields(self):
    config_checks.check_override_flags(['main', '--config.model.hidden_dim=3', '--workdir=x', '--config.seed=2'])
    with self.assertRaisesRegex(SystemExit, r"Unknown config field 'model.hiden_dim'.*'model.hidden_dim'"):
      config_checks.check_override_flags(['main', '--config.model.hiden_dim=3'])
    with self.assertRaisesRegex(SystemExit, r"Unknown config field 'modle.cell'.*'model'"):
      config_checks.check_override_flags(['main', '--config.modle.cell=gru'])

  def test_parse_arg(self):
    arg = config_lib.parse_arg('size=tiny,flag,n=3', size='small', flag=False, n=1)
    self.assertEqual((arg.size, arg.flag, arg.n), ('tiny', True, 3))
    self.assertFalse(config_lib.parse_arg('flag=false', flag=True).flag)
    with self.assertRaisesRegex(ValueError, r"size='huge' is not one of \('tiny', 'small', 'base'\)"):
      config_lib.parse_arg('size=huge', size='small')

  def test_from_saved_fills_fields_added_since(self):
    saved = config_lib.to_dict(config_lib.base_config())
    del saved['decode']['min_len']
    saved['model']['cell'] = 'gru'
    config = config_lib.from_saved(saved)
    self.assertEqual((config.decode.min_len, config.model.cell), (0, 'gru'))
    self.assertEqual(config_lib.diff(saved, config_lib.to_dict(config)), [])
    saved['model']['celll'] = 'gru'
    with self.assertRaisesRegex(ValueError, "config.json has the field 'model.celll'"):
      config_lib.from_saved(saved)

  def test_diff_ignores_resumable_fields(self):
    a = config_lib.to_dict(config_lib.base_config())
    b = config_lib.to_dict(config_lib.base_config())
    b['num_train_steps'] = 5
    b['data']['data_dir'] = '/elsewhere'
    self.assertEqual(config_lib.diff(a, b), [])
    b['model']['cell'] = 'gru'
    self.assertEqual(config_lib.diff(a, b), ["model.cell: 'lstm' -> 'gru'"])


class EpochsTest(parameterized.TestCase):
  """num_train_epochs sets num_train_steps from the training batches of an epoch, counted on the prepared data."""

  @parameterized.named_parameters(('token_budget_buckets', 0, 100), ('one_shape', 1, 0))
  def test_steps_are_epochs_times_the_batches_of_an_epoch(self, num_buckets, batch_tokens):
    from experiments import default  # pylint: disable=g-import-not-at-top

    config = default.get_config('size=tiny')
    config.data.update(data_dir=self.create_tempdir().full_path, num_buckets=num_buckets, batch_tokens=batch_tokens)
    config.num_train_epochs = 2.5
    data = pipeline.prepare(config.data, vocab_dir=self.create_tempdir().full_path)
    workdir_lib.set_data_fields(config, data)
    if batch_tokens:  # the plan's fixed count, as data_report.json records it
      per_epoch = data.report['train_batches_per_epoch']
      self.assertNotEqual(per_epoch, len(data.splits['train']) / config.data.batch_size)
    else:
      per_epoch = len(data.splits['train']) / config.data.batch_size
    self.assertEqual(config.num_train_steps, round(2.5 * per_epoch))
    config.num_train_epochs, config.num_train_steps = 0.0, 7
    workdir_lib.set_data_fields(config, data)
    self.assertEqual(config.num_train_steps, 7)

  def test_a_steps_flag_on_an_epoch_config_is_refused(self):
    family = config_lib.import_beside(os.path.join(ROOT, 'experiments', 'multi30k', 'gru_context.py'), '_family.py')
    config = family.multi30k_config('small', epochs=10, batch_size=128)
    with self.assertRaisesRegex(ValueError, r'trains by epochs \(num_train_epochs=10\).*num_train_epochs=0'):
      config_checks.check_steps_override(config, {'num_train_steps': 5})
    config_checks.check_steps_override(config, {'num_train_steps': 5, 'num_train_epochs': 0.0})
    config_checks.check_steps_override(config, {})
    config.num_train_epochs = 0.0
    config_checks.check_steps_override(config, {'num_train_steps': 5})


if __name__ == '__main__':
  absltest.main()
