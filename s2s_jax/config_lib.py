"""Experiment configs: every field with its default, `:k=v` argument parsing, validation and resume diffs.

An experiment file starts from `base_config()`, so every field exists, has a type, and can be overridden from the
command line (`--config.optim.learning_rate=3e-4`). `validate()` runs before anything is built or compiled and names
the field, the bad value and what is allowed.
"""

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import sys
from typing import Any

import ml_collections
from ml_collections import config_dict

from s2s_jax import attention as attention_lib
from s2s_jax import decode
from s2s_jax import models
from s2s_jax.data import registry
from s2s_jax.data import vocab as vocab_lib

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'adadelta')
SCHEDULES = ('constant', 'rsqrt', 'halving', 'cosine')
LEN_POLICIES = ('filter', 'truncate')
METRICS = (
  'loss',
  'perplexity',
  'token_accuracy',
  'exact_match',
  'bleu',
  'bleu_lc',
  'bleu_tok',
  'chrf',
  'rouge1',
  'rouge2',
  'rougeL',
  'wer',
  'cer',
)
SIZES = ('tiny', 'small', 'base')
SCORE_GROUPS = {
  'bleu': ('bleu', 'bleu_lc'),
  'bleu_tok': ('bleu_tok',),
  'chrf': ('chrf',),
  'exact_match': ('exact_match',),
  'rouge': ('rouge1', 'rouge2', 'rougeL'),
  'wer': ('wer', 'cer'),
}
DATASETS = registry.NAMES
# Fields that may change when a run resumes (CONVENTIONS §3); any other difference needs --allow_config_change.
RESUMABLE = (
  'num_train_steps',
  'num_train_epochs',
  'log_every_steps',
  'eval_every_steps',
  'checkpoint_every_steps',
  'keep_checkpoints',
  'data.data_dir',
  'data.manual_dir',
)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'k=v,flag' (from `--config=file.py:k=v,flag`) against typed defaults."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, has_value, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config arg {key!r}; known: {sorted(defaults)}')
    kind = type(defaults[key])
    if kind is bool:
      out[key] = (value.lower() in ('true', '1', 'yes')) if has_value else True
    else:
      out[key] = kind(value)
  if 'size' in out and out.size not in SIZES:
    raise ValueError(f'size={out.size!r} is not one of {SIZES}.')
  return out


def base_config() -> ml_collections.ConfigDict:
  """Every config field with its default. Experiments change values; they never add fields."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # parameter initialisation and dropout
  c.num_seeds = 1  # > 1: seeds seed .. seed+num_seeds-1 trained as one vmapped program (workdir/seed_<s>/ each)
  c.num_train_steps = 1_000
  c.num_train_epochs = 0.0  # > 0: num_train_steps = this many epochs of training batches (set from the data)
  c.log_every_steps = 50
  c.eval_every_steps = 500  # validation loss + decoded metric on a bounded sample
  c.checkpoint_every_steps = 500  # a multiple of log_every_steps
  c.keep_checkpoints = 2
  c.data = ml_collections.ConfigDict(
    dict(
      name='dates',
      manual_dir=config_dict.placeholder(str),  # raw files of a dataset on disk; default $S2S_DATA_DIR/<folder>
      data_dir=config_dict.placeholder(str),  # prepared data; default $S2S_CACHE_DIR or ~/.cache/s2s_jax
      source_lang='',  # corpora: the source language code, e.g. de
      target_lang='',  # corpora: the target language code, e.g. en
      files=config_dict.placeholder(str),  # parallel_text: 'train=a.de,a.en;validation=b.tsv;test=c.de,c.en'
      tfds_name=config_dict.placeholder(str),  # tfds: a prepared catalogue dataset, e.g. wmt14_translate/de-en
      download=False,  # corpora: fetch missing raw files from their official URLs (needs internet)
      seed=0,  # generation seed of the built-in tasks (kept apart from `seed`, so seed sweeps share data)
      num_train_examples=50_000,  # built-in tasks
      num_eval_examples=2_000,  # built-in tasks: validation and test each
      task_min_len=1,  # copy / reverse / sort: sequence lengths
      task_max_len=10,  # fsdd: the most digits in one connected-digit utterance
      task_num_symbols=20,
      task_max_digits=3,  # addition
      num_mel_bins=40,  # speech: log-mel features per 10 ms frame (s2s_jax/data/audio.py)
      image_height=24,  # images: every image is resized to (or, for digits_captions, drawn at) this size
      image_width=100,
      image_channels=1,  # 1 (grey) or 3 (RGB)
      tokenizer='char',  # char | word (whitespace) | moses (sacremoses) | sentencepiece
      spm_model_type='unigram',  # sentencepiece: unigram | bpe
      lowercase=False,
      shared_vocab=False,  # one vocabulary for both sides, built from both (model.pointer_generator needs it)
      reverse_source=False,  # feed source tokens in reverse order (Sutskever et al. 2014)
      vocab_min_count=1,  # char / word / moses
      max_vocab_size=0,  # char / word / moses: 0 = no limit; sentencepiece: the vocabulary size (required)
      num_buckets=1,  # training batch shapes by length (1: one padded shape; 0: the fewest within max_padding)
      max_padding=0.1,  # num_buckets=0: at most this share of source and of target positions of training batches
      batch_tokens=0,  # > 0: batches of about this many target tokens (per bucket) instead of batch_size
      max_src_len=64,  # tokens including EOS; also the padded length the location score is built for
      max_tgt_len=64,
      src_len_policy='filter',  # training examples over max_src_len: filter | truncate (eval data is truncated)
      tgt_len_policy='filter',
      batch_size=64,  # global (all devices, all processes)
      eval_batch_size=256,
      eval_split='validation',
      test_splits='test',  # comma-separated
    )
  )
  c.model = ml_collections.ConfigDict(dataclasses.asdict(models.Seq2SeqConfig()))
  c.optim = ml_collections.ConfigDict(
    dict(
      optimizer='adam',
      learning_rate=1e-3,
      schedule='constant',  # constant | rsqrt | halving | cosine, all after a linear warmup
      warmup_steps=0,
      decay_start_steps=0,  # halving: first halving at this step
      decay_every_steps=0,  # halving: then every this many steps
      decay_factor=0.5,  # halving
      grad_clip_norm=1.0,  # global norm; 0: off
      label_smoothing=0.0,
      weight_decay=0.0,  # adamw
      momentum=0.0,  # sgd
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      grad_accum_steps=1,  # micro-batches per update; batch_size is split over them
      skip_nonfinite=False,  # skip (and count) updates with a non-finite loss or gradient instead of stopping
      coverage_loss_weight=0.0,  # See et al. 2017: + weight x sum_i min(a_t, c_t) per target token (needs coverage)
      doubly_stochastic_weight=0.0,  # Xu et al. 2015: + weight x sum_i (1 - sum_t a_t[i])^2 per example
    )
  )
  c.decode = ml_collections.ConfigDict(decode.config_defaults())  # decode.DecodeOptions documents each field
  c.eval = ml_collections.ConfigDict(
    dict(
      metric='exact_match',  # which eval/<metric> picks best/ and is reported
      scores='bleu,chrf,exact_match',  # decoded scores: bleu, bleu_tok, chrf, exact_match, rouge, wer
      mode='max',  # max | min
      num_decode_examples=512,  # validation examples decoded at each evaluation
      num_samples_to_log=3,
    )
  )
  return c


def flatten(d: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested dicts as one dict of dotted keys ('data.name')."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _check_keys_and_types(config: ml_collections.ConfigDict) -> None:
  base = flatten(to_dict(base_config()))
  got = flatten(to_dict(config))
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
  'decode.beam_size': (1, 1000, False, False),
  'decode.length_alpha': (0.0, 10.0, False, False),
  'decode.max_len': (0, 100_000, False, False),
  'decode.max_len_a': (0.0, 1000.0, False, False),
  'decode.max_len_b': (0, 100_000, False, False),
  'decode.min_len': (0, 100_000, False, False),
  'decode.no_repeat_ngram_size': (0, 100, False, False),
  'decode.coverage_beta': (0.0, 100.0, False, False),
  'decode.batch_size': (1, 1_000_000, False, False),
  'eval.num_decode_examples': (1, _BIG, False, False),
  'eval.num_samples_to_log': (0, 1_000_000, False, False),
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
  d, o = config.data, config.optim
  _check_choice('data.name', d.name, DATASETS)
  _check_choice('data.tokenizer', d.tokenizer, vocab_lib.TOKENIZERS)
  _check_choice('data.src_len_policy', d.src_len_policy, LEN_POLICIES)
  _check_choice('data.tgt_len_policy', d.tgt_len_policy, LEN_POLICIES)
  _check_choice('optim.optimizer', o.optimizer, OPTIMIZERS)
  _check_choice('optim.schedule', o.schedule, SCHEDULES)
  _check_choice('eval.metric', config.eval.metric, METRICS)
  _check_choice('eval.mode', config.eval.mode, ('max', 'min'))
  groups = [g for g in config.eval.scores.split(',') if g]
  for group in groups:
    _check_choice('eval.scores item', group, SCORE_GROUPS)
  produced = {'loss', 'perplexity', 'token_accuracy'}.union(*(SCORE_GROUPS[g] for g in groups))
  if config.eval.metric not in produced:
    raise ValueError(
      f'eval.metric={config.eval.metric!r} is not computed by eval.scores={config.eval.scores!r}; '
      f'add its group ({[g for g, m in SCORE_GROUPS.items() if config.eval.metric in m]}).'
    )
  flat = flatten(to_dict(config))
  for key, value in flat.items():
    if key in RANGES:
      _check_range(key, value)
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
  if config.model.dtype == 'float16':
    raise ValueError(
      'model.dtype=float16 needs loss scaling, which this project does not do (small gradients '
      "underflow to 0); use bfloat16 (the same memory and float32's range) or float32."
    )
  decode.options(config.decode, d.max_tgt_len)  # max_len resolved; min_len below it
  if config.decode.coverage_beta and config.model.attention in attention_lib.NO_ATTENTION:
    raise ValueError(
      f'decode.coverage_beta needs attention weights; model.attention={config.model.attention!r} has none.'
    )
  if o.coverage_loss_weight > 0 and not config.model.coverage:
    raise ValueError(
      'optim.coverage_loss_weight > 0 needs model.coverage=True (the loss penalises attending again '
      'where the coverage vector is already high).'
    )
  if config.model.pointer_generator and not d.shared_vocab:
    raise ValueError(
      'model.pointer_generator copies source ids into the output, so source and target must share '
      'one vocabulary: set data.shared_vocab=True.'
    )
  if o.schedule == 'halving' and o.decay_every_steps <= 0:
    raise ValueError('optim.schedule=halving needs optim.decay_every_steps > 0.')
  if d.batch_size % o.grad_accum_steps:
    raise ValueError(
      f'data.batch_size={d.batch_size} must be a multiple of optim.grad_accum_steps={o.grad_accum_steps}.'
    )
  _check_choice('data.spm_model_type', d.spm_model_type, ('unigram', 'bpe'))
  if d.tokenizer == 'sentencepiece' and d.max_vocab_size <= 0:
    raise ValueError('data.tokenizer=sentencepiece needs data.max_vocab_size > 0 (the number of pieces).')
  dataset = registry.get(d.name)
  dataset.check(d)
  if dataset.source != 'text' and (d.shared_vocab or d.reverse_source):
    raise ValueError(
      f'data.name={d.name!r} reads {"images" if dataset.source == "image" else "audio"}: '
      'data.shared_vocab and data.reverse_source apply to text.'
    )
  if dataset.source == 'audio':
    if d.num_mel_bins <= 0:
      raise ValueError(f'data.num_mel_bins must be positive, got {d.num_mel_bins}.')
  if o.doubly_stochastic_weight > 0 and config.model.attention in attention_lib.NO_ATTENTION:
    raise ValueError(
      'optim.doubly_stochastic_weight > 0 needs attention weights; model.attention='
      f'{config.model.attention!r} has none.'
    )
  if dataset.source == 'image':
    if d.image_channels not in (1, 3):
      raise ValueError(f'data.image_channels must be 1 (grey) or 3 (RGB), got {d.image_channels}.')
    if d.image_height <= 0 or d.image_width <= 0:
      raise ValueError(
        f'data.image_height and data.image_width must be positive, got {d.image_height} x {d.image_width}.'
      )
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ValueError(
      f'checkpoint_every_steps={config.checkpoint_every_steps} must be a multiple of '
      f'log_every_steps={config.log_every_steps}, so no partial logging sums are checkpointed.'
    )
  model = dict(to_dict(config.model))
  model.update(
    src_vocab_size=model['src_vocab_size'] or 1,
    tgt_vocab_size=model['tgt_vocab_size'] or 1,
    input_features=model['input_features'] or 1,
    input_kind=model['input_kind'] if model['input_kind'] != 'tokens' else dataset.input_kind,
    max_src_len=model['max_src_len'] or d.max_src_len,
  )
  models.Seq2SeqConfig.from_dict(model).validate()


def check_override_flags(argv: list[str]) -> None:
  """Rejects `--config.a.b=v` flags naming no config field, listing the valid fields of that section.

  Every experiment starts from base_config(), so the valid names are known before the experiment file is loaded;
  this replaces ml_collections' bare AttributeError with the list of what exists.
  """
  base = flatten(to_dict(base_config()))
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


def model_config(config: ml_collections.ConfigDict) -> models.Seq2SeqConfig:
  cfg = models.Seq2SeqConfig.from_dict(to_dict(config.model))
  cfg.validate()
  return cfg


def from_saved(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """A config from a workdir's config.json; fields added to the project since it was written get their defaults."""
  config = base_config()
  flat = flatten(to_dict(config))
  for key, value in flatten(saved).items():
    if key not in flat:
      raise ValueError(f'config.json has the field {key!r}, which this version of s2s_jax does not know.')
    section, _, name = key.rpartition('.')
    target = config
    for part in filter(None, section.split('.')):
      target = target[part]
    target[name] = value
  return config


def diff(old: dict[str, Any], new: dict[str, Any], ignore=RESUMABLE) -> list[str]:
  """Lines `key: old -> new` for every differing field outside `ignore` (absent old fields count as defaults)."""
  a = flatten(to_dict(from_saved(old)))
  b = flatten(new)
  return [
    f'{k}: {a.get(k, "<absent>")!r} -> {b.get(k, "<absent>")!r}'
    for k in sorted(set(a) | set(b))
    if k not in ignore and a.get(k) != b.get(k)
  ]


def shrink_cadence_to_tiny(c: ml_collections.ConfigDict) -> None:
  """Batches, warmup and cadence of every `size=tiny` config: small, divisible by 8 test devices, frequent."""
  c.data.update(batch_size=16, eval_batch_size=64)
  c.optim.warmup_steps = 5
  c.update(log_every_steps=10, eval_every_steps=20, checkpoint_every_steps=20)
  c.eval.num_decode_examples = 64


def import_beside(file: str, name: str):
  """The Python file `name` in the folder of `file`, imported once: how an experiment file reaches the family module
  beside it (e.g. experiments/multi30k/_family.py), whatever the working directory and sys.path."""
  path = os.path.join(os.path.dirname(os.path.abspath(file)), name)
  key = 's2s_experiment_' + hashlib.sha256(path.encode()).hexdigest()[:16]
  if key not in sys.modules:
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[key] = module
  return sys.modules[key]
