"""Experiment configs: every field with its default (the schema), `:k=v` argument parsing, the model config, resume
diffs, and how an experiment file reaches its family module (`import_beside`).

An experiment file starts from `base_config()`, so every field exists, has a type, and can be overridden from the
command line (`--config.optim.learning_rate=3e-4`). `config_checks.validate()` runs before anything is built or
compiled and names the field, the bad value and what is allowed.
"""

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
from typing import Any

import ml_collections
from ml_collections import config_dict

from s2s_jax import decode
from s2s_jax import seq2seq_config

SIZES = ('tiny', 'small', 'base')
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
  'init.from_workdir',  # used only by a run's first start: a resume ignores them
  'init.checkpoint',
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
      dataset_module=config_dict.placeholder(str),  # a dataset of your own: the module of its SPEC (data.name)
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
      num_workers=0,  # grain worker processes making training batches (0: none); keep it when resuming (iterator state)
      vocab_sample_size=2_000_000,  # vocabularies are built from a fixed sample of at most this many training pairs
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
  c.model = ml_collections.ConfigDict(dataclasses.asdict(seq2seq_config.Seq2SeqConfig()))
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
      # Scheduled sampling (Bengio et al. 2015): the probability that a decoder step is fed the reference token
      # (else the model's own prediction): constant | linear | exponential | inverse_sigmoid over training steps.
      teacher_forcing='constant',
      teacher_forcing_ratio=1.0,  # constant: the ratio (1: plain teacher forcing); linear: the ratio at step 0
      teacher_forcing_k=0.0,  # linear: decrease per step; exponential: ratio k ** step (0 < k < 1);
      # inverse_sigmoid: k / (k + exp(step / k)) (k >= 1)
      teacher_forcing_floor=0.0,  # the decays never go below this ratio
      scheduled_sampling_sample=False,  # feed a sample of the model's distribution instead of its argmax
      # Sequence-level training (s2s_jax/sequence_loss.py): minimum expected risk over K candidates + the reference.
      sequence_loss='none',  # none | risk
      sequence_candidates=4,  # K per source, searched inside the step
      sequence_source='beam',  # beam (the n-best of a beam K wide) | sample (temperature 1)
      sequence_cost='bleu',  # bleu (1 - BLEU+1 on token ids, in JAX) | chrf (1 - chrF on text, sacreBLEU on the host)
      sequence_sharpness=1.0,  # alpha: Q = softmax(alpha * log p) over the candidate set
      sequence_token_weight=0.3,  # loss = w * token-level loss + (1 - w) * risk (per reference token)
    )
  )
  c.init = ml_collections.ConfigDict(
    dict(
      from_workdir=config_dict.placeholder(str),  # a new run starts from this run's parameters (--init_from)
      checkpoint='best',  # which of its checkpoints: best, latest, a step, avg:K (checkpointing.restore_params)
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
      patience=0,  # early stopping: stop after this many validations without a better eval.metric; 0: off
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


def model_config(config: ml_collections.ConfigDict) -> seq2seq_config.Seq2SeqConfig:
  cfg = seq2seq_config.Seq2SeqConfig.from_dict(to_dict(config.model))
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


def parse_init_from(value: str) -> tuple[str, str]:
  """'DIR', 'DIR:best', 'DIR:latest', 'DIR:1200' or 'DIR:avg:5' -> (DIR, checkpoint)."""
  if ':avg:' in value:
    workdir, _, spec = value.partition(':avg:')
    return workdir, 'avg:' + spec
  workdir, _, spec = value.rpartition(':')
  if workdir and (spec in ('best', 'latest') or spec.isdigit()):
    return workdir, spec
  return value, 'best'
