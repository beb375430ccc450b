"""Config validation: every field's type and range, each section's choices and rules, and the rules across them.

`validate(config)` runs before anything is built or compiled (main.py, workdir.resolve_config, inference.load) and
raises ValueError naming the field, the bad value and what is allowed. One checker per section; `_check_model`
validates the model fields with placeholders for what the data sets, so an invalid model fails before the data
is prepared. `check_override_flags` and `check_steps_override` check command-line overrides. The schema and
defaults are config_lib.base_config().
"""

import math
from typing import Any

import ml_collections

from s2s_jax import attention as attention_lib
from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import mbr
from s2s_jax import metrics as metrics_lib
from s2s_jax import seq2seq_config
from s2s_jax import sequence_loss
from s2s_jax.data import registry
from s2s_jax.data import vocab as vocab_lib

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'adadelta')
SCHEDULES = ('constant', 'rsqrt', 'halving', 'cosine')
TEACHER_FORCING = ('constant', 'linear', 'exponential', 'inverse_sigmoid')
_DECAY_K = {'linear': '> 0 (the decrease per step)', 'exponential': 'in (0, 1)', 'inverse_sigmoid': '>= 1'}
LEN_POLICIES = ('filter', 'truncate')
DATASETS = registry.NAMES


def _check_keys_and_types(config: ml_collections.ConfigDict) -> None:
  base = config_lib.flatten(config_lib.to_dict(config_lib.base_config()))
  got = config_lib.flatten(config_lib.to_dict(config))
  for key in sorted(set(got) - set(base)):
    section = key.rpartition('.')[0]
    valid = sorted(k for k in base if k.rpartition('.')[0] == section)
    raise ValueError(f'Unknown config field {key!r}; valid fields{" of " + section if section else ""}: {valid}.')
  for key in sorted(set(base) - set(got)):
    raise ValueError(f'Config field {key!r} is missing; start experiments from config_lib.base_config().')
  for key, default in base.items():
    value = got[key]
    if default is None:  # an optional string (placeholder)
      ok = value is None or isinstance(value, str)
    elif isinstance(default, bool):
      ok = isinstance(value, bool)
    elif isinstance(default, float):
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
      ok = isinstance(value, type(default)) and not (isinstance(value, bool) and not isinstance(default, bool))
    if not ok:
      kind = type(default).__name__ if default is not None else 'str'
      raise ValueError(f'Config field {key!r} must be of type {kind}, got {value!r} ({type(value).__name__}).')


def _check_choice(name: str, value: Any, allowed) -> None:
  if value not in allowed:
    raise ValueError(f'{name}={value!r} is not one of {tuple(allowed)}.')


_BIG = 10**9
# The allowed range of every numeric field: (low, high, low excluded, high excluded). A field added to base_config
# without a range here fails config_test (every numeric field must have one).
RANGES = {
  'seed': (0, 2**31 - 1, False, False),
  'num_seeds': (1, 64, False, False),
  'num_train_steps': (1, _BIG, False, False),
  'num_train_epochs': (0.0, 1e6, False, False),
  'log_every_steps': (1, _BIG, False, False),
  'eval_every_steps': (1, _BIG, False, False),
  'checkpoint_every_steps': (1, _BIG, False, False),
  'keep_checkpoints': (1, 1000, False, False),
  'data.seed': (0, 2**31 - 1, False, False),
  'data.num_train_examples': (1, _BIG, False, False),
  'data.num_eval_examples': (1, _BIG, False, False),
  'data.task_min_len': (1, 100_000, False, False),
  'data.task_max_len': (1, 100_000, False, False),
  'data.task_num_symbols': (1, 100_000, False, False),
  'data.task_max_digits': (1, 18, False, False),
  'data.num_mel_bins': (1, 512, False, False),
  'data.image_height': (1, 4096, False, False),
  'data.image_width': (1, 4096, False, False),
  'data.image_channels': (1, 3, False, False),
  'data.vocab_min_count': (1, _BIG, False, False),
  'data.max_vocab_size': (0, 10_000_000, False, False),
  'data.vocab_sample_size': (1, 10_000_000_000, False, False),
  'data.num_workers': (0, 256, False, False),
  'data.num_buckets': (0, 256, False, False),
  'data.max_padding': (0.0, 1.0, True, True),
  'data.batch_tokens': (0, 100_000_000, False, False),
  'data.max_src_len': (1, 1_000_000, False, False),
  'data.max_tgt_len': (1, 1_000_000, False, False),
  'data.batch_size': (1, 1_000_000, False, False),
  'data.eval_batch_size': (1, 1_000_000, False, False),
  'model.src_vocab_size': (0, 100_000_000, False, False),
  'model.tgt_vocab_size': (0, 100_000_000, False, False),
  'model.input_features': (0, 1_000_000, False, False),
  'model.frame_stride': (1, 8, False, False),
  'model.specaug_masks': (0, 100, False, False),
  'model.specaug_freq_width': (0, 10_000, False, False),
  'model.specaug_time_width': (0, 1_000_000, False, False),
  'model.cnn_layers': (1, 16, False, False),
  'model.cnn_features': (1, 65_536, False, False),
  'model.image_channels': (1, 3, False, False),
  'model.num_layers': (1, 64, False, False),
  'model.embed_dim': (1, 65_536, False, False),
  'model.hidden_dim': (1, 65_536, False, False),
  'model.encoder_hidden_dim': (0, 65_536, False, False),
  'model.attention_dim': (0, 65_536, False, False),
  'model.max_src_len': (0, 1_000_000, False, False),
  'model.dropout_rate': (0.0, 1.0, False, True),
  'model.init_scale': (0.0, 100.0, True, False),
  'optim.learning_rate': (0.0, 1e38, False, False),
  'optim.warmup_steps': (0, _BIG, False, False),
  'optim.decay_start_steps': (0, _BIG, False, False),
  'optim.decay_every_steps': (0, _BIG, False, False),
  'optim.decay_factor': (0.0, 1.0, True, False),
  'optim.grad_clip_norm': (0.0, 1e9, False, False),
  'optim.label_smoothing': (0.0, 1.0, False, True),
  'optim.weight_decay': (0.0, 100.0, False, False),
  'optim.momentum': (0.0, 1.0, False, True),
  'optim.b1': (0.0, 1.0, False, True),
  'optim.b2': (0.0, 1.0, False, True),
  'optim.eps': (0.0, 1.0, True, False),
  'optim.grad_accum_steps': (1, 1_000_000, False, False),
  'optim.coverage_loss_weight': (0.0, 1000.0, False, False),
  'optim.doubly_stochastic_weight': (0.0, 1000.0, False, False),
  'optim.teacher_forcing_ratio': (0.0, 1.0, False, False),
  'optim.teacher_forcing_k': (0.0, 1e9, False, False),
  'optim.teacher_forcing_floor': (0.0, 1.0, False, False),
  'optim.sequence_candidates': (1, 256, False, False),
  'optim.sequence_sharpness': (0.0, 1000.0, True, False),
  'optim.sequence_token_weight': (0.0, 1.0, False, False),
  'decode.beam_size': (1, 1000, False, False),
  'decode.length_alpha': (0.0, 10.0, False, False),
  'decode.max_len': (0, 100_000, False, False),
  'decode.max_len_a': (0.0, 1000.0, False, False),
  'decode.max_len_b': (0, 100_000, False, False),
  'decode.min_len': (0, 100_000, False, False),
  'decode.no_repeat_ngram_size': (0, 100, False, False),
  'decode.coverage_beta': (0.0, 100.0, False, False),
  'decode.batch_size': (1, 1_000_000, False, False),
  'decode.num_samples': (1, 10_000, False, False),
  'decode.temperature': (0.0, 1000.0, False, False),
  'decode.top_k': (0, 100_000_000, False, False),
  'decode.top_p': (0.0, 1.0, True, False),
  'decode.epsilon': (0.0, 1.0, False, True),
  'decode.mbr_candidates': (1, 10_000, False, False),
  'eval.num_decode_examples': (1, _BIG, False, False),
  'eval.num_samples_to_log': (0, 1_000_000, False, False),
  'eval.patience': (0, 1_000_000, False, False),
}


def _check_range(key: str, value) -> None:
  low, high, low_open, high_open = RANGES[key]
  inside = (
    math.isfinite(value)
    and (value > low if low_open else value >= low)
    and (value < high if high_open else value <= high)
  )
  if not inside:
    raise ValueError(
      f'{key} must be in {"(" if low_open else "["}{low}, {high}{")" if high_open else "]"}, got {value}.'
    )


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field before anything is built; raises ValueError with what to change."""
  _check_keys_and_types(config)
  for key, value in config_lib.flatten(config_lib.to_dict(config)).items():
    if key in RANGES:
      _check_range(key, value)
  _check_cadence(config)
  dataset = _check_data(config.data)
  _check_optim(config.optim)
  check_batch_sizes(config)
  _check_eval(config.eval)
  _check_decode(config)
  _check_model(config, dataset)


def _check_cadence(config: ml_collections.ConfigDict) -> None:
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ValueError(
      f'checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple of '
      f'log_every_steps={config.log_every_steps}, so no partial logging sums are checkpointed.'
    )


def _check_data(d: ml_collections.ConfigDict) -> registry.Dataset:
  dataset = registry.of(d)  # one of DATASETS, or the SPEC of data.dataset_module
  _check_choice('data.tokenizer', d.tokenizer, vocab_lib.TOKENIZERS)
  _check_choice('data.src_len_policy', d.src_len_policy, LEN_POLICIES)
  _check_choice('data.tgt_len_policy', d.tgt_len_policy, LEN_POLICIES)
  _check_choice('data.spm_model_type', d.spm_model_type, vocab_lib.SPM_MODEL_TYPES)
  if d.tokenizer == 'sentencepiece' and d.max_vocab_size <= 0:
    raise ValueError('data.tokenizer=sentencepiece needs data.max_vocab_size > 0 (the number of pieces).')
  dataset.check(d)
  if dataset.source != 'text' and (d.shared_vocab or d.reverse_source):
    raise ValueError(
      f'data.name={d.name!r} reads {"images" if dataset.source == "image" else "audio"}: '
      'data.shared_vocab and data.reverse_source apply to text.'
    )
  if dataset.source == 'image' and d.image_channels not in (1, 3):
    raise ValueError(f'data.image_channels must be 1 (grey) or 3 (RGB), got {d.image_channels}.')
  return dataset


def _check_optim(o: ml_collections.ConfigDict) -> None:
  _check_choice('optim.optimizer', o.optimizer, OPTIMIZERS)
  _check_choice('optim.schedule', o.schedule, SCHEDULES)
  if o.weight_decay and o.optimizer != 'adamw':
    raise ValueError(
      f'optim.weight_decay={o.weight_decay} applies to optim.optimizer=adamw only; with '
      f'{o.optimizer!r} it would do nothing. Use adamw, or set weight_decay=0.'
    )
  if o.momentum and o.optimizer != 'sgd':
    raise ValueError(
      f"optim.momentum={o.momentum} applies to optim.optimizer=sgd only (Adam's is optim.b1); with "
      f'{o.optimizer!r} it would do nothing. Use sgd, or set momentum=0.'
    )
  _check_choice('optim.teacher_forcing', o.teacher_forcing, TEACHER_FORCING)
  _check_choice('optim.sequence_loss', o.sequence_loss, sequence_loss.LOSSES)
  _check_choice('optim.sequence_source', o.sequence_source, sequence_loss.SOURCES)
  _check_choice('optim.sequence_cost', o.sequence_cost, sequence_loss.COSTS)
  k, decay = o.teacher_forcing_k, o.teacher_forcing
  if (
    (decay == 'linear' and k <= 0)
    or (decay == 'exponential' and not 0 < k < 1)
    or (decay == 'inverse_sigmoid' and k < 1)
  ):
    raise ValueError(f'optim.teacher_forcing={decay!r} needs optim.teacher_forcing_k {_DECAY_K[decay]}, got {k}.')
  if o.schedule == 'halving' and o.decay_every_steps <= 0:
    raise ValueError('optim.schedule=halving needs optim.decay_every_steps > 0.')


def check_batch_sizes(config: ml_collections.ConfigDict, devices: int = 1) -> None:
  """data.batch_size must split evenly over `devices` and then into optim.grad_accum_steps micro-batches, and
  data.eval_batch_size over `devices`: `validate` checks one device, the training loop its device count."""
  accum = config.optim.grad_accum_steps
  for key, parts in (('batch_size', devices * accum), ('eval_batch_size', devices)):
    size = config.data[key]
    if size % parts:
      factors = [f'the device count {devices}'] if devices > 1 else []
      factors += [f'optim.grad_accum_steps={accum}'] if key == 'batch_size' else []
      raise ValueError(f'data.{key}={size} must be a multiple of {" x ".join(factors)}.')


def computed_metrics(scores: str) -> set[str]:
  """The metrics an evaluation computes under eval.scores=`scores` (valid groups): what eval.metric (and a tuning
  search's METRIC) may name."""
  groups = [g for g in scores.split(',') if g]
  return set(metrics_lib.LOSS_METRICS).union(*(metrics_lib.SCORE_GROUPS[g] for g in groups))


def _check_eval(e: ml_collections.ConfigDict) -> None:
  _check_choice('eval.metric', e.metric, metrics_lib.METRICS)
  _check_choice('eval.mode', e.mode, ('max', 'min'))
  for group in filter(None, e.scores.split(',')):
    _check_choice('eval.scores item', group, sorted(metrics_lib.SCORE_GROUPS))
  if e.metric not in computed_metrics(e.scores):
    raise ValueError(
      f'eval.metric={e.metric!r} is not computed by eval.scores={e.scores!r}; '
      f'add its group ({[g for g, m in metrics_lib.SCORE_GROUPS.items() if e.metric in m]}).'
    )


def _check_decode(config: ml_collections.ConfigDict) -> None:
  decode.options(config.decode, config.data.max_tgt_len)  # max_len resolved; min_len below it
  _check_choice('decode.mbr', config.decode.mbr, mbr.NONE_AND_UTILITIES)
  _check_choice('decode.mbr_source', config.decode.mbr_source, decode.MBR_SOURCES)
  if config.decode.coverage_beta and config.model.attention in attention_lib.NO_ATTENTION:
    raise ValueError(
      f'decode.coverage_beta needs attention weights; model.attention={config.model.attention!r} has none.'
    )


def _check_model(config: ml_collections.ConfigDict, dataset: registry.Dataset) -> None:
  """The model section against the other sections, then Seq2SeqConfig.validate with placeholders for the fields
  the data sets (vocabulary sizes, input kind and features): an invalid model fails before any data is read."""
  m, o = config.model, config.optim
  if m.dtype == 'float16':
    raise ValueError(
      'model.dtype=float16 needs loss scaling, which this project does not do (small gradients '
      "underflow to 0); use bfloat16 (the same memory and float32's range) or float32."
    )
  no_attention = m.attention in attention_lib.NO_ATTENTION
  if o.coverage_loss_weight > 0 and not m.coverage:
    raise ValueError(
      'optim.coverage_loss_weight > 0 needs model.coverage=True (the loss penalises attending again '
      'where the coverage vector is already high).'
    )
  if o.doubly_stochastic_weight > 0 and no_attention:
    raise ValueError(
      f'optim.doubly_stochastic_weight > 0 needs attention weights; model.attention={m.attention!r} has none.'
    )
  if m.pointer_generator and not config.data.shared_vocab:
    raise ValueError(
      'model.pointer_generator copies source ids into the output, so source and target must share '
      'one vocabulary: set data.shared_vocab=True.'
    )
  fields = dict(config_lib.to_dict(m))
  fields.update(
    src_vocab_size=fields['src_vocab_size'] or 1,
    tgt_vocab_size=fields['tgt_vocab_size'] or 1,
    input_features=fields['input_features'] or 1,
    input_kind=fields['input_kind'] if fields['input_kind'] != 'tokens' else dataset.input_kind,
    max_src_len=fields['max_src_len'] or config.data.max_src_len,
  )
  seq2seq_config.Seq2SeqConfig.from_dict(fields).validate()


def check_override_flags(argv: list[str]) -> None:
  """Rejects `--config.a.b=v` flags naming no config field, listing the valid fields of that section.

  Every experiment starts from base_config(), so the valid names are known before the experiment file is loaded;
  this replaces ml_collections' bare AttributeError with the list of what exists.
  """
  base = config_lib.flatten(config_lib.to_dict(config_lib.base_config()))
  sections = {k.rpartition('.')[0] for k in base}
  for arg in argv[1:]:
    if not arg.startswith('--config.'):
      continue
    key = arg[len('--config.') :].partition('=')[0]
    if key in base or key in sections:
      continue
    section = key.rpartition('.')[0]
    valid = (
      sorted(k for k in base if k.rpartition('.')[0] == section)
      if section in sections
      else sorted(sections - {''}) + sorted(k for k in base if '.' not in k)
    )
    raise SystemExit(
      f'Unknown config field {key!r} in {arg!r}; valid fields'
      f'{" of " + section if section in sections and section else ""}: {valid}'
    )


def check_steps_override(config: ml_collections.ConfigDict, overridden) -> None:
  """A `--config.num_train_steps=N` flag (`overridden`: the fields set on the command line) on a config that trains
  by epochs would be replaced by the epoch count; refuse it instead of ignoring it."""
  if config.num_train_epochs and 'num_train_steps' in overridden and 'num_train_epochs' not in overridden:
    raise ValueError(
      f'This config trains by epochs (num_train_epochs={config.num_train_epochs:g}), which sets '
      'num_train_steps from the data; add --config.num_train_epochs=0 to train a fixed number of steps.'
    )
