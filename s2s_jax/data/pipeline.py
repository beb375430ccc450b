"""From prepared TFDS data to encoded splits: the source frontend and target vocabulary, length policies, the bucket
plan and the data report (batches.py turns the splits into padded batches).

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
import time
from typing import Any

from absl import logging
import numpy as np

from s2s_jax.data import audio
from s2s_jax.data import bucketing
from s2s_jax.data import builders
from s2s_jax.data import corpora
from s2s_jax.data import encoding
from s2s_jax.data import frontend as frontend_lib
from s2s_jax.data import id_cache
from s2s_jax.data import identity as identity_lib
from s2s_jax.data import images
from s2s_jax.data import raw_files
from s2s_jax.data import registry
from s2s_jax.data import vocab as vocab_lib
from s2s_jax.data import vocab_cache
from s2s_jax.data import workers

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Split:
  """One split: raw text (for references and decoding) and ids after the length policy.

  In memory (lists), or read from the id cache: then `store` is its id_cache.RecordPairs, `src_ids` / `tgt_ids`
  are read-only views of it and `sources` / `targets` are read from disk when first used.
  """

  name: str
  sources: Sequence[str]
  targets: Sequence[str]
  src_ids: Sequence[np.ndarray]
  tgt_ids: Sequence[np.ndarray]
  references: list[list[str]] | None = None  # streams [K][N] where a corpus has several references (AESLC test)
  store: id_cache.RecordPairs | None = None

  def __len__(self) -> int:
    return len(self.src_ids)

  def pairs(self, indices) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (source, target) ids of examples `indices` (one batched read from the id cache)."""
    if self.store is not None:
      return self.store.pairs(indices)
    return [(self.src_ids[i], self.tgt_ids[i]) for i in indices]

  def lengths(self) -> np.ndarray:
    """int [N, 2]: source and target steps of every example (the id cache's length index)."""
    if self.store is not None:
      return self.store.lengths
    return np.array([[len(s), len(t)] for s, t in zip(self.src_ids, self.tgt_ids)], np.int64).reshape(-1, 2)

  def reference_streams(self) -> list[list[str]]:
    """What decoded text is scored against: the corpus' reference streams, else the targets."""
    return self.references or [self.targets]


@dataclasses.dataclass
class PreparedData:
  """A prepared dataset: what `prepare` returns and batches.py reads (text, audio or image sources alike)."""

  frontend: frontend_lib.Frontend  # the source side: a text vocabulary, an audio or an image frontend
  tgt_vocab: vocab_lib.Vocab
  splits: dict[str, Split]
  src_len: int  # padded lengths of every batch (bucketed training batches: at most these)
  tgt_len: int
  report: dict[str, Any]
  buckets: list[bucketing.Bucket] | None = None  # training batches by length (data.num_buckets / batch_tokens)
  manifest: dict[str, Any] | None = None  # the raw files the dataset was prepared from (builders.raw_manifest)
  identity: dict[str, Any] | None = None  # what the pairs are (data_identity)

  @property
  def fingerprint(self) -> str:
    """The data fingerprint (builders.fingerprint of the identity): both caches' keys and provenance.json's
    data_sha256; '' without an identity."""
    return builders.fingerprint(self.identity) if self.identity else ''

  @property
  def legacy_fingerprint(self) -> str:
    """The fingerprint older code recorded for these data (builders.legacy_fingerprint), for the resume check of a
    workdir it wrote; '' without a manifest."""
    return builders.legacy_fingerprint(self.manifest) if self.manifest else ''

  def batches_per_epoch(self, batch_size: int) -> float:
    """Global training batches in one epoch: the bucket plan's fixed count, else examples / batch_size (without
    buckets, batches run on across epoch boundaries)."""
    if self.buckets:
      return float(sum(bucketing.batches_per_bucket(self.buckets)))
    return len(self.splits['train']) / batch_size


def resolve_paths(data_config) -> None:
  """Absolute data.data_dir, data.manual_dir (a dataset's raw folder) and data.files paths (CONVENTIONS §4)."""
  data_config.data_dir = builders.data_dir(data_config)
  if folder := registry.of(data_config).manual_dir(data_config):
    data_config.manual_dir = folder
  elif data_config.manual_dir:
    data_config.manual_dir = os.path.abspath(os.path.expanduser(data_config.manual_dir))
  if data_config.files:
    data_config.files = ';'.join(
      f'{split}={",".join(paths)}' for split, paths in raw_files.resolve_files(data_config.files).items()
    )


def encode_split(
  name: str,
  pairs: Sequence[tuple[Any, str]],
  frontend: frontend_lib.Frontend,
  tgt_vocab: vocab_lib.Vocab,
  data_config,
  train: bool,
) -> tuple[Split, dict[str, Any]]:
  """Encodes one split in memory under the length policy (s2s_jax/data/encoding.py); returns the split and its
  report entry. A source is a string or an `audio.Clip`, whose `sources` entry is the clip's name."""
  encoded = encoding.encode(pairs, frontend, tgt_vocab, encoding.LengthPolicy.of(data_config), train)
  sources = [pairs[i][0] if isinstance(pairs[i][0], str) else pairs[i][0].name for i in encoded.kept]
  targets = [pairs[i][1] for i in encoded.kept]
  return Split(name, sources, targets, encoded.src_ids, encoded.tgt_ids), encoding.report(encoded)


def _vocab_settings(data_config, side: int) -> dict[str, object]:
  lang = (data_config.source_lang, data_config.target_lang)[side]
  return dict(lowercase=data_config.lowercase, lang=lang, model_type=data_config.spm_model_type)


def _frontend(source: str, train_pairs: Sequence[tuple[Any, str]], data_config):
  """The frontend of an audio or image dataset."""
  if source == 'audio':  # data.num_mel_bins at the clips' sample rate
    return audio.AudioFrontend(data_config.num_mel_bins, train_pairs[0][0].rate)
  return images.ImageFrontend(data_config.image_height, data_config.image_width, data_config.image_channels)


def _expected_settings(source: str, side: int, data_config) -> dict[str, object]:
  """What the stored frontend (side 0) or vocabulary (side 1) must report (`settings()`, without an audio clip's
  sample rate, which comes from the data)."""
  if side == 0 and source == 'audio':
    return {'kind': 'audio', 'num_mel': data_config.num_mel_bins}
  if side == 0 and source == 'image':
    return images.ImageFrontend(
      data_config.image_height, data_config.image_width, data_config.image_channels
    ).settings()
  side = 0 if data_config.shared_vocab else side
  return vocab_lib.settings(data_config.tokenizer, **_vocab_settings(data_config, side))


def build_vocabs(
  dataset, train_pairs: Sequence[tuple[Any, str]], data_config, pool: workers.Pool | None = None
) -> tuple[frontend_lib.Frontend, vocab_lib.Vocab]:
  """The source frontend and the target vocabulary from the training pairs (data.tokenizer, languages, sizes).

  A text dataset's frontend is its source vocabulary, a speech dataset's an `audio.AudioFrontend` (data.num_mel_bins
  at the clips' sample rate), an image dataset's an `images.ImageFrontend` (image_height x image_width x channels).

  With data.shared_vocab, one vocabulary is built from both sides (with the source side's settings) and serves
  both, so a source id and a target id name the same token (needed by the pointer-generator's copying).

  With a `pool` (text datasets), char/word/moses tokens are counted in its workers, chunk by chunk, and summed:
  the same vocabularies (counts add up), in a fraction of the time on a large corpus.
  """
  source = dataset.source
  # Each vocabulary to build: the sides it reads and the side whose settings it takes.
  if source != 'text':
    plans = [((1,), 1)]
  elif data_config.shared_vocab:
    plans = [((0, 1), 0)]
  else:
    plans = [((0,), 0), ((1,), 1)]
  kind = data_config.tokenizer
  sizes = {'min_count': data_config.vocab_min_count, 'max_size': data_config.max_vocab_size}
  if pool is not None and source == 'text' and kind != 'sentencepiece':
    counting = [(sides, _count_settings(data_config, side)) for sides, side in plans]
    chunk_size = max(workers.CHUNK, -(-len(train_pairs) // (4 * pool.size)))  # few chunks: few Counters to sum
    totals = [collections.Counter() for _ in plans]
    for counts in pool.map(_count_chunk, train_pairs, kind, counting, chunk_size=chunk_size):
      for total, count in zip(totals, counts):
        total.update(count)
    vocabs = [
      vocab_lib.from_counts(total, kind, **_count_settings(data_config, side), **sizes)
      for total, (_, side) in zip(totals, plans)
    ]
  else:
    vocabs = [
      vocab_lib.build(
        (pair[s] for pair in train_pairs for s in sides), kind, **sizes, **_vocab_settings(data_config, side)
      )
      for sides, side in plans
    ]
  if source != 'text':
    return _frontend(source, train_pairs, data_config), vocabs[0]
  return (vocabs[0], vocabs[0]) if data_config.shared_vocab else tuple(vocabs)


def _count_settings(data_config, side: int) -> dict[str, object]:
  settings = _vocab_settings(data_config, side)
  return {'lowercase': settings['lowercase'], 'lang': settings['lang']}


def _count_chunk(pairs, kind: str, counting) -> list[collections.Counter]:
  """A chunk's token counts, one Counter per (sides, settings) of `counting` (run in a data worker)."""
  return [
    vocab_lib.count_tokens((pair[s] for pair in pairs for s in sides), kind, **settings) for sides, settings in counting
  ]


def prepare(
  data_config, vocab_dir: str | None = None, batch_multiple: int = 1, for_training: bool = False
) -> PreparedData:
  """Loads every split, builds the frontend and the target vocabulary from train (or reuses `vocab_dir`'s); encodes.

  A text dataset's ids come from the id cache (s2s_jax/data/id_cache.py: encoded once per data, vocabularies and
  length policy, then read by random access); audio and image datasets are encoded in memory at every start.
  `batch_multiple` (devices x accumulation steps) is what token-based batch sizes are rounded to. `for_training`
  checks data.eval_split and data.test_splits against the dataset's splits before any vocabulary is written.
  """
  dataset = registry.of(data_config)
  if dataset.source == 'text':
    splits, report, (frontend, tgt_vocab), identity = _text_splits(dataset, data_config, vocab_dir, for_training)
  else:
    splits, report, (frontend, tgt_vocab), identity = _feature_splits(dataset, data_config, vocab_dir, for_training)
  return _finish(dataset, data_config, splits, report, frontend, tgt_vocab, batch_multiple, identity)


def _vocabs(
  dataset, data_config, vocab_dir: str | None, identity: dict[str, Any], train_pairs, pool: workers.Pool | None = None
) -> tuple[Any, Any]:
  """The workdir's frontend and target vocabulary (checked against the config), else the vocabulary cache's, else
  built from a sample of `train_pairs()` (in `pool`'s workers where that helps; and cached); saved into `vocab_dir`."""
  paths = vocab_dir and [os.path.join(vocab_dir, f'vocab.{side}.json') for side in ('src', 'tgt')]
  if paths and all(os.path.exists(p) for p in paths):
    frontend, tgt_vocab = frontend_lib.load(paths[0]), vocab_lib.load(paths[1])
    if data_config.shared_vocab and frontend.tokens != tgt_vocab.tokens:
      raise ValueError(
        f'data.shared_vocab=True, but {paths[0]} and {paths[1]} differ; use a new workdir or delete '
        'the vocabulary files to rebuild them.'
      )
    for side, (vocab, path) in enumerate(zip((frontend, tgt_vocab), paths)):
      want = _expected_settings(dataset.source, side, data_config)
      got = {k: v for k, v in vocab.settings().items() if k != 'sample_rate'}
      if got != want:
        raise ValueError(
          f'{path} was built with {vocab.settings()}, but the config asks for {want}; use a new '
          'workdir or delete the vocabulary files to rebuild them.'
        )
    return frontend, tgt_vocab
  cache_key = vocab_cache.key(data_config, builders.fingerprint(identity))
  cached = vocab_cache.load(data_config.data_dir, cache_key)
  if cached:
    frontend, tgt_vocab = cached
  else:
    start, sample = time.time(), vocab_cache.sample(train_pairs(), data_config.vocab_sample_size)
    frontend, tgt_vocab = build_vocabs(dataset, sample, data_config, pool)
    logging.info('Built the vocabularies from %d training pairs in %.1f s.', len(sample), time.time() - start)
    vocab_cache.store(data_config.data_dir, cache_key, frontend, tgt_vocab, identity)
  for vocab, path in zip((frontend, tgt_vocab), paths or ()):
    vocab.save(path)
  return frontend, tgt_vocab


def _text_splits(dataset, data_config, vocab_dir, for_training):
  """A text dataset's splits from the id cache (built first when absent: the only time raw text is read)."""
  with workers.Pool() as pool:  # worker processes start only if a large corpus is read, counted or encoded
    return _text_splits_in(dataset, data_config, vocab_dir, for_training, pool)


def _text_splits_in(dataset, data_config, vocab_dir, for_training, pool):
  sources = dataset.sources(dataset, data_config)  # prepared once (locked; cheap when prepared); no text read
  corpora.require_split(dataset, sources, 'train', data_config)  # the error names what would provide it
  identity = identity_lib.data_identity(dataset, data_config, list(sources))
  fingerprint, names = builders.fingerprint(identity), identity_lib.split_names(identity)
  if 'train' not in names:
    raise ValueError(f'data.name={dataset.name!r} has no train split; found {sorted(names)}.')
  if for_training:
    check_splits(dataset, data_config, names)
  raw = {}

  def load_raw() -> dict:
    if not raw:
      raw.update(dataset.load(data_config, pool)[0])
    return raw

  vocabs = _vocabs(dataset, data_config, vocab_dir, identity, lambda: load_raw()['train'], pool)
  policy = encoding.LengthPolicy.of(data_config)
  cache_key = id_cache.key(fingerprint, *vocabs, policy)
  stored = id_cache.load(data_config.data_dir, cache_key)
  if stored is None:
    os.makedirs(os.path.join(data_config.data_dir, id_cache.FOLDER), exist_ok=True)
    # One process of a job encodes; the others wait here and then read its cache.
    with builders.lock(os.path.join(data_config.data_dir, id_cache.FOLDER), cache_key):
      stored = id_cache.load(data_config.data_dir, cache_key)
      if stored is None:
        logging.info('Encoding %s into %s.', dataset.name, id_cache.folder(data_config.data_dir, cache_key))
        references = corpora.load_references(dataset, data_config, pool)
        id_cache.build(data_config.data_dir, cache_key, load_raw(), references, *vocabs, policy, pool, identity)
        stored = id_cache.load(data_config.data_dir, cache_key)
  stored_splits, split_reports = stored
  if sorted(stored_splits) != sorted(names):  # the key holds the split names: only a foreign folder can differ
    raise ValueError(
      f'The id cache {id_cache.folder(data_config.data_dir, cache_key)} holds splits {sorted(stored_splits)}, but '
      f'data.name={dataset.name!r} has {sorted(names)}; delete that folder to encode the data again.'
    )
  splits = {}
  for name, (records, texts, has_references) in stored_splits.items():
    references = [list(stream) for stream in texts.field('references')] if has_references else None
    splits[name] = Split(
      name,
      texts.field('sources'),
      texts.field('targets'),
      records.side(0),
      records.side(1),
      references=references,
      store=records,
    )
  return splits, {'dataset': dataset.name, 'splits': split_reports}, vocabs, identity


def _feature_splits(dataset, data_config, vocab_dir, for_training):
  """An audio or image dataset's splits, encoded in memory."""
  raw, skipped = dataset.load(data_config)
  if 'train' not in raw:
    raise ValueError(f'data.name={dataset.name!r} has no train split; found {sorted(raw)}.')
  if for_training:
    check_splits(dataset, data_config, raw)
  identity = identity_lib.data_identity(dataset, data_config, list(raw))
  frontend, tgt_vocab = _vocabs(dataset, data_config, vocab_dir, identity, lambda: raw['train'])
  splits, report = {}, {'dataset': dataset.name, 'splits': {}}
  what = {'audio': 'audio', 'image': 'images'}[dataset.source]
  report[f'skipped_{what}'] = {'count': len(skipped), 'files': skipped}
  if skipped:
    logging.warning(
      '%d unreadable %s files were skipped (listed in data_report.json): %s', len(skipped), what, skipped[:3]
    )
  for name, pairs in raw.items():
    splits[name], report['splits'][name] = encode_split(
      name, pairs, frontend, tgt_vocab, data_config, train=name == 'train'
    )
  return splits, report, (frontend, tgt_vocab), identity


def _finish(
  dataset, data_config, splits, report, frontend, tgt_vocab, batch_multiple: int, identity: dict[str, Any]
) -> PreparedData:
  """Padded lengths, padding fractions and the bucket plan, from the splits' length indexes."""
  if not len(splits['train']):
    raise ValueError(
      f'Every training example was filtered out ({report["splits"]["train"]["filtered"]}); '
      'raise data.max_src_len / data.max_tgt_len or use the truncate policy.'
    )
  lengths = {name: split.lengths() for name, split in splits.items()}
  src_len = max(int(x[:, 0].max()) for x in lengths.values() if len(x))
  tgt_len = max(int(x[:, 1].max()) for x in lengths.values() if len(x))
  for name, split in splits.items():
    report['splits'][name]['padding_fraction'] = {
      'source': round(1 - int(lengths[name][:, 0].sum()) / max(1, len(split) * src_len), 4),
      'target': round(1 - int(lengths[name][:, 1].sum()) / max(1, len(split) * tgt_len), 4),
    }
  report.update(
    src_vocab_size=len(frontend) if dataset.source == 'text' else 0,
    tgt_vocab_size=len(tgt_vocab),
    padded_src_len=src_len,
    padded_tgt_len=tgt_len,
  )
  buckets = bucketing.plan(data_config, lengths['train'], batch_multiple, report)
  logging.info('Data %s: %s', dataset.name, {k: len(v) for k, v in splits.items()})
  manifest = identity_lib.data_manifest(dataset, data_config)
  return PreparedData(frontend, tgt_vocab, splits, src_len, tgt_len, report, buckets, manifest, identity)


def check_splits(dataset, data_config, splits) -> None:
  """Fails (before anything is trained or written) when data.eval_split or a data.test_splits name is not one of
  the dataset's `splits`."""
  wanted = {'data.eval_split': [data_config.eval_split]}
  wanted['data.test_splits'] = [s for s in data_config.test_splits.split(',') if s]
  for field, names in wanted.items():
    if missing := [n for n in names if n not in splits]:
      raise ValueError(
        f'{field} names {", ".join(map(repr, missing))}, which data.name={dataset.name!r} does '
        f'not have; its splits are {", ".join(sorted(splits))}.'
      )
