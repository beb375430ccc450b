"""From prepared TFDS data to encoded splits: vocabularies, length policies, the bucket plan and the data report
(batches.py turns the splits into padded batches).

Every batch is a dict of numpy arrays with static shapes:
  inputs       int32 [B, S]   source ids ending in EOS, PAD after
  inputs_mask  int32 [B, S]   1 on real source steps (contiguous from the start)
  targets      int32 [B, T]   target ids ending in EOS, PAD after (decoder inputs are derived on device)
S and T are the longest kept source and target over all splits (at most data.max_src_len / max_tgt_len), so one
shape serves training, evaluation and decoding and each step compiles once.

Training examples that are empty, or longer than the limits under the `filter` policy, are dropped and counted in
`data_report.json`; under `truncate` they are cut (EOS kept) and counted. Evaluation and test examples are never
dropped: over-long ones are truncated and counted, so every reference is scored.
"""

import collections
from collections.abc import Sequence
import dataclasses
import os
from typing import Any

from absl import logging
import numpy as np

from s2s_jax.data import EOS_ID, UNK_ID
from s2s_jax.data import audio
from s2s_jax.data import bucketing
from s2s_jax.data import builders
from s2s_jax.data import corpora
from s2s_jax.data import images
from s2s_jax.data import raw_files
from s2s_jax.data import registry
from s2s_jax.data import vocab as vocab_lib
from s2s_jax.data import vocab_cache

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Split:
  """One split: raw text (for references and decoding) and ids after the length policy."""

  name: str
  sources: list[str]
  targets: list[str]
  src_ids: list[np.ndarray]
  tgt_ids: list[np.ndarray]
  references: list[list[str]] | None = None  # streams [K][N] where a corpus has several references (AESLC test)

  def __len__(self) -> int:
    return len(self.src_ids)

  def reference_streams(self) -> list[list[str]]:
    """What decoded text is scored against: the corpus' reference streams, else the targets."""
    return self.references or [self.targets]


@dataclasses.dataclass
class TextData:
  src_vocab: vocab_lib.Vocab
  tgt_vocab: vocab_lib.Vocab
  splits: dict[str, Split]
  src_len: int  # padded lengths of every batch (bucketed training batches: at most these)
  tgt_len: int
  report: dict[str, Any]
  buckets: list[bucketing.Bucket] | None = None  # training batches by length (data.num_buckets / batch_tokens)
  manifest: dict[str, Any] | None = None  # the raw files the dataset was prepared from (builders.raw_manifest)

  @property
  def fingerprint(self) -> str:
    """The identity of the data (builders.data_fingerprint of the manifest); '' without a manifest."""
    return builders.data_fingerprint(self.manifest) if self.manifest else ''

  def batches_per_epoch(self, batch_size: int) -> float:
    """Global training batches in one epoch: the bucket plan's fixed count, else examples / batch_size (without
    buckets, batches run on across epoch boundaries)."""
    if self.buckets:
      return float(sum(bucketing.batches_per_bucket(self.buckets)))
    return len(self.splits['train']) / batch_size


def data_manifest(data_config) -> dict[str, Any]:
  """The manifest of the prepared dataset of `data_config` (read from beside its files; made once at preparation)."""
  if data_config.name == 'tfds':  # prepared outside this project: its name, version and folder identify it
    return {'dataset': f'tfds:{data_config.tfds_name}', 'config': data_config.data_dir, 'version': '', 'files': []}
  return builders.read_manifest(registry.get(data_config.name).builder(data_config))


def resolve_paths(data_config) -> None:
  """Absolute data.data_dir, data.manual_dir (a corpus' raw folder) and data.files paths (CONVENTIONS §4)."""
  data_config.data_dir = os.path.abspath(os.path.expanduser(data_config.data_dir or builders.default_data_dir()))
  if data_config.manual_dir:
    data_config.manual_dir = os.path.abspath(os.path.expanduser(data_config.manual_dir))
  elif folder := raw_files.resolve_manual_dir(data_config):
    data_config.manual_dir = folder
  if data_config.files:
    data_config.files = ';'.join(
      f'{split}={",".join(paths)}' for split, paths in raw_files.resolve_files(data_config.files).items()
    )


def _stats(lengths: Sequence[int]) -> dict[str, float]:
  if not lengths:
    return {'min': 0, 'mean': 0.0, 'p50': 0, 'p95': 0, 'p99': 0, 'max': 0}
  a = np.asarray(lengths)
  return {
    'min': int(a.min()),
    'mean': round(float(a.mean()), 2),
    'p50': int(np.percentile(a, 50)),
    'p95': int(np.percentile(a, 95)),
    'p99': int(np.percentile(a, 99)),
    'max': int(a.max()),
  }


def _fit(ids, limit: int) -> np.ndarray:
  """Token ids + EOS, cut to `limit` tokens with EOS kept last; feature frames [frames, F] cut to `limit` frames."""
  if isinstance(ids, np.ndarray):
    return ids[:limit]
  ids = ids[: limit - 1] + [EOS_ID]
  return np.asarray(ids, np.int32)


def _steps(ids) -> int:
  """Source / target steps of an encoded example: tokens + EOS, or feature frames."""
  return len(ids) if isinstance(ids, np.ndarray) else len(ids) + 1


def encode_split(
  name: str,
  pairs: Sequence[tuple[Any, str]],
  src_vocab: vocab_lib.Vocab,
  tgt_vocab: vocab_lib.Vocab,
  data_config,
  train: bool,
) -> tuple[Split, dict[str, Any]]:
  """Tokenises one split and applies the length policy; returns the split and its report entry.

  A source is a string (text) or an `audio.Clip`, which the source "vocabulary" (an `audio.AudioFrontend`) turns
  into frames; its length counts frames and its `sources` entry is the clip's name.
  """
  limits = {'source': data_config.max_src_len, 'target': data_config.max_tgt_len}
  policy = {'source': data_config.src_len_policy, 'target': data_config.tgt_len_policy}
  filtered, truncated = collections.Counter(), collections.Counter()
  lengths = {'source': [], 'target': []}
  unk = {'source': 0, 'target': 0}
  split = Split(name, [], [], [], [])
  for src, tgt in pairs:
    ids = {'source': src_vocab.encode(src), 'target': tgt_vocab.encode(tgt)}
    # Sutskever et al. 2014: feed the source backwards (EOS still last)
    if data_config.reverse_source and isinstance(src, str):
      ids['source'] = ids['source'][::-1]
    for side in ids:
      lengths[side].append(_steps(ids[side]))
      if not isinstance(ids[side], np.ndarray):
        unk[side] += sum(i == UNK_ID for i in ids[side])
    drop = None
    for side in ('source', 'target'):
      too_long = _steps(ids[side]) > limits[side]
      if train and not len(ids[side]):
        drop = drop or f'empty_{side}'
      elif train and too_long and policy[side] == 'filter':
        drop = drop or f'{side}_too_long'
    if drop:
      filtered[drop] += 1
      continue
    for side in ('source', 'target'):
      truncated[side] += _steps(ids[side]) > limits[side]
    split.sources.append(src if isinstance(src, str) else src.name)
    split.targets.append(tgt)
    split.src_ids.append(_fit(ids['source'], limits['source']))
    split.tgt_ids.append(_fit(ids['target'], limits['target']))
  num_tokens = {side: max(1, sum(lengths[side]) - len(lengths[side])) for side in lengths}
  report = {
    'num_raw': len(pairs),
    'num_examples': len(split),
    'filtered': dict(filtered),
    'truncated': dict(truncated),
    'source_len': _stats(lengths['source']),
    'target_len': _stats(lengths['target']),
    'source_oov_rate': round(unk['source'] / num_tokens['source'], 6),
    'target_oov_rate': round(unk['target'] / num_tokens['target'], 6),
  }
  return split, report


def _vocab_settings(data_config, side: int) -> dict[str, object]:
  lang = (data_config.source_lang, data_config.target_lang)[side]
  return dict(lowercase=data_config.lowercase, lang=lang, model_type=data_config.spm_model_type)


def _frontend(source: str, train_pairs: Sequence[tuple[Any, str]], data_config):
  """The source "vocabulary" of an audio or image dataset."""
  if source == 'audio':  # data.num_mel_bins at the clips' sample rate
    return audio.AudioFrontend(data_config.num_mel_bins, train_pairs[0][0].rate)
  return images.ImageFrontend(data_config.image_height, data_config.image_width, data_config.image_channels)


def _expected_settings(source: str, side: int, data_config) -> dict[str, object]:
  """What a stored vocabulary of this side must report (`settings()`, without an audio clip's sample rate, which
  comes from the data)."""
  if side == 0 and source == 'audio':
    return {'kind': 'audio', 'num_mel': data_config.num_mel_bins}
  if side == 0 and source == 'image':
    return images.ImageFrontend(
      data_config.image_height, data_config.image_width, data_config.image_channels
    ).settings()
  side = 0 if data_config.shared_vocab else side
  return vocab_lib.settings(data_config.tokenizer, **_vocab_settings(data_config, side))


def build_vocabs(train_pairs: Sequence[tuple[Any, str]], data_config) -> tuple[vocab_lib.Vocab, vocab_lib.Vocab]:
  """Source and target vocabularies from the training pairs (data.tokenizer, languages, sizes).

  A speech dataset's source side is an `audio.AudioFrontend` (data.num_mel_bins at the clips' sample rate), an
  image dataset's an `images.ImageFrontend` (data.image_height x image_width x image_channels).

  With data.shared_vocab, one vocabulary is built from both sides (with the source side's settings) and serves
  both, so a source id and a target id name the same token (needed by the pointer-generator's copying).
  """
  source = registry.get(data_config.name).source
  if source != 'text':
    target = vocab_lib.build(
      (pair[1] for pair in train_pairs),
      data_config.tokenizer,
      min_count=data_config.vocab_min_count,
      max_size=data_config.max_vocab_size,
      **_vocab_settings(data_config, 1),
    )
    return _frontend(source, train_pairs, data_config), target
  if data_config.shared_vocab:
    vocab = vocab_lib.build(
      (text for pair in train_pairs for text in pair),
      data_config.tokenizer,
      min_count=data_config.vocab_min_count,
      max_size=data_config.max_vocab_size,
      **_vocab_settings(data_config, 0),
    )
    return vocab, vocab
  return tuple(
    vocab_lib.build(
      (pair[side] for pair in train_pairs),
      data_config.tokenizer,
      min_count=data_config.vocab_min_count,
      max_size=data_config.max_vocab_size,
      **_vocab_settings(data_config, side),
    )
    for side in (0, 1)
  )


def prepare(data_config, vocab_dir: str | None = None, batch_multiple: int = 1, for_training: bool = False) -> TextData:
  """Loads every split, builds the vocabularies from train (or reuses those in `vocab_dir`) and encodes.

  `batch_multiple` (devices x accumulation steps) is what token-based batch sizes are rounded to. `for_training`
  checks data.eval_split and data.test_splits against the dataset's splits before any vocabulary is written.
  """
  dataset = registry.get(data_config.name)
  raw, skipped = dataset.load(data_config)
  if 'train' not in raw:
    raise ValueError(f'data.name={data_config.name!r} has no train split; found {sorted(raw)}.')
  if for_training:
    check_splits(data_config, raw)
  paths = vocab_dir and [os.path.join(vocab_dir, f'vocab.{side}.json') for side in ('src', 'tgt')]
  if paths and all(os.path.exists(p) for p in paths):
    src_vocab, tgt_vocab = (vocab_lib.load(p) for p in paths)
    if data_config.shared_vocab and src_vocab.tokens != tgt_vocab.tokens:
      raise ValueError(
        f'data.shared_vocab=True, but {paths[0]} and {paths[1]} differ; use a new workdir or delete '
        'the vocabulary files to rebuild them.'
      )
    for side, (vocab, path) in enumerate(zip((src_vocab, tgt_vocab), paths)):
      want = _expected_settings(dataset.source, side, data_config)
      got = {k: v for k, v in vocab.settings().items() if k != 'sample_rate'}
      if got != want:
        raise ValueError(
          f'{path} was built with {vocab.settings()}, but the config asks for {want}; use a new '
          'workdir or delete the vocabulary files to rebuild them.'
        )
  else:
    cache_key = vocab_cache.key(data_config, builders.data_fingerprint(data_manifest(data_config)) or '')
    cached = vocab_cache.load(data_config.data_dir, cache_key)
    if cached:
      src_vocab, tgt_vocab = cached
    else:
      src_vocab, tgt_vocab = build_vocabs(vocab_cache.sample(raw['train'], data_config.vocab_sample_size), data_config)
      vocab_cache.store(data_config.data_dir, cache_key, src_vocab, tgt_vocab)
    for vocab, path in zip((src_vocab, tgt_vocab), paths or ()):
      vocab.save(path)
  splits, report = {}, {'dataset': data_config.name, 'splits': {}}
  if dataset.source != 'text':
    what = {'audio': 'audio', 'image': 'images'}[dataset.source]
    report[f'skipped_{what}'] = {'count': len(skipped), 'files': skipped}
    if skipped:
      logging.warning(
        '%d unreadable %s files were skipped (listed in data_report.json): %s', len(skipped), what, skipped[:3]
      )
  for name, pairs in raw.items():
    splits[name], report['splits'][name] = encode_split(
      name, pairs, src_vocab, tgt_vocab, data_config, train=name == 'train'
    )
  for name, streams in corpora.load_references(data_config).items():
    if name in splits and name != 'train':  # evaluation splits are never filtered: the streams stay aligned
      assert all(len(x) == len(splits[name]) for x in streams), name
      splits[name].references = streams
      report['splits'][name]['references_per_example'] = len(streams)
  if not len(splits['train']):
    raise ValueError(
      f'Every training example was filtered out ({report["splits"]["train"]["filtered"]}); '
      'raise data.max_src_len / data.max_tgt_len or use the truncate policy.'
    )
  src_len = max(len(x) for s in splits.values() for x in s.src_ids)
  tgt_len = max(len(x) for s in splits.values() for x in s.tgt_ids)
  for name, split in splits.items():
    report['splits'][name]['padding_fraction'] = {
      'source': round(1 - sum(map(len, split.src_ids)) / max(1, len(split) * src_len), 4),
      'target': round(1 - sum(map(len, split.tgt_ids)) / max(1, len(split) * tgt_len), 4),
    }
  report.update(
    src_vocab_size=len(src_vocab) if dataset.source == 'text' else 0,
    tgt_vocab_size=len(tgt_vocab),
    padded_src_len=src_len,
    padded_tgt_len=tgt_len,
  )
  buckets = None
  if data_config.num_buckets != 1 or data_config.batch_tokens:
    train = splits['train']
    lengths = (np.array([len(x) for x in train.src_ids]), np.array([len(x) for x in train.tgt_ids]))
    buckets = bucketing.make_buckets(
      *lengths,
      num_buckets=data_config.num_buckets,
      max_padding=data_config.max_padding,
      batch_size=data_config.batch_size,
      batch_tokens=data_config.batch_tokens,
      multiple=batch_multiple,
    )
    report['splits']['train']['padding_fraction'] = bucketing.padding_fraction(buckets, *lengths)
    counts = bucketing.batches_per_bucket(buckets)
    report['train_buckets'] = [
      {
        'examples': len(b.example_ids),
        'src_len': b.src_len,
        'tgt_len': b.tgt_len,
        'batch_size': b.batch_size,
        'batches_per_epoch': n,
      }
      for b, n in zip(buckets, counts)
    ]
    report['train_batch_shapes'] = len(buckets)
    report['train_batches_per_epoch'] = sum(counts)
    logging.info(
      'Training batches: %d shapes, %d batches per epoch, padding %s',
      len(buckets),
      sum(counts),
      report['splits']['train']['padding_fraction'],
    )
  logging.info('Data %s: %s', data_config.name, {k: len(v) for k, v in splits.items()})
  return TextData(src_vocab, tgt_vocab, splits, src_len, tgt_len, report, buckets, data_manifest(data_config))


def check_splits(data_config, splits) -> None:
  """Fails (before anything is trained or written) when data.eval_split or a data.test_splits name is not one of
  the dataset's `splits`."""
  wanted = {'data.eval_split': [data_config.eval_split]}
  wanted['data.test_splits'] = [s for s in data_config.test_splits.split(',') if s]
  for field, names in wanted.items():
    if missing := [n for n in names if n not in splits]:
      raise ValueError(
        f'{field} names {", ".join(map(repr, missing))}, which data.name={data_config.name!r} does '
        f'not have; its splits are {", ".join(sorted(splits))}.'
      )
