"""Vocabularies built once per dataset and settings, and from a bounded sample of the training text.

A vocabulary pair is stored in `data.data_dir/vocabularies/<key>/` (vocab.src.json, vocab.tgt.json and
manifest.json with their sha256 and the data's identity), where the key hashes the data fingerprint (the sha256 of
identity.data_identity: data.name, builder config and version, each split's raw files in order with their sha256
and sizes, the source and target features and the direction; for data.name='tfds' its prepared dataset_info.json
and record files), every setting that shapes a vocabulary (tokenizer, case, languages, SentencePiece model type,
minimum count, size, shared vocabulary, frontend settings), the sample size and VERSION (a change of the code that
builds vocabularies, or of what the key holds, bumps it, so an old cache is never read). Swapping a dataset's sides
or splits, or reversing its direction (even with a shared vocabulary, the same in both directions), is another key.
A new workdir copies the cached pair, so a second run of the same config builds nothing. The folder is written
under a temporary name and renamed when complete (several processes may build at once: the first rename wins, the
others read it; a failed write removes its temporary folder); a cache whose files do not match its manifest is
removed with a warning and rebuilt.

Vocabularies are built from a deterministic sample of at most `data.vocab_sample_size` training pairs (all of them
when the corpus is smaller), so building one is bounded in time and memory whatever the corpus size. The source side
of a pair is the dataset's frontend (s2s_jax/data/frontend.py): a vocabulary, or an audio or image frontend.
"""

import hashlib
import json
import os
import shutil

from absl import logging
import numpy as np

from s2s_jax import fileio
from s2s_jax.data import frontend as frontend_lib
from s2s_jax.data import vocab as vocab_lib

VERSION = 2  # 2: the key holds the data identity (issue 25: version 1 keys ignored sides, splits, direction)
_FOLDER = 'vocabularies'
_SAMPLE_SEED = 20261202  # constant: the sample depends only on the corpus and the sample size


def sample(pairs: list, size: int) -> list:
  """At most `size` pairs, drawn without replacement by a fixed seed, in corpus order (all pairs when fewer)."""
  if len(pairs) <= size:
    return pairs
  keep = np.sort(np.random.default_rng(_SAMPLE_SEED).choice(len(pairs), size=size, replace=False))
  return [pairs[i] for i in keep]


def key(data_config, fingerprint: str) -> str | None:
  """The cache key of the vocabularies of these data and settings; None without a data fingerprint."""
  if not fingerprint:
    return None
  d = data_config
  settings = {
    'version': VERSION,
    'fingerprint': fingerprint,
    'name': d.name,
    'tokenizer': d.tokenizer,
    'lowercase': d.lowercase,
    'langs': [d.source_lang, d.target_lang],
    'spm_model_type': d.spm_model_type,
    'vocab_min_count': d.vocab_min_count,
    'max_vocab_size': d.max_vocab_size,
    'shared_vocab': d.shared_vocab,
    'reverse_source': d.reverse_source,
    'frontend': [d.num_mel_bins, d.image_height, d.image_width, d.image_channels],
    'vocab_sample_size': d.vocab_sample_size,
  }
  return hashlib.sha256(json.dumps(settings, sort_keys=True).encode('utf-8')).hexdigest()[:20]


def load(data_dir: str, cache_key: str | None):
  """The cached (frontend, target vocabulary), or None (absent, or damaged: then removed with a warning)."""
  if cache_key is None:
    return None
  folder = os.path.join(data_dir, _FOLDER, cache_key)
  manifest_path = os.path.join(folder, 'manifest.json')
  if not os.path.exists(manifest_path):
    return None
  try:
    with open(manifest_path, encoding='utf-8') as f:
      manifest = json.load(f)
    paths = [os.path.join(folder, f'vocab.{side}.json') for side in ('src', 'tgt')]
    for path in paths:
      if manifest.get(os.path.basename(path)) != fileio.sha256_file(path):
        raise ValueError(f'{path} does not match its sha256 in {manifest_path}')
    return frontend_lib.load(paths[0]), vocab_lib.load(paths[1])
  except (OSError, ValueError, AttributeError) as e:
    logging.warning(
      'The vocabulary cache %s is damaged (%s); removing it and building the vocabularies again.', folder, e
    )
    shutil.rmtree(folder, ignore_errors=True)
    return None


def store(data_dir: str, cache_key: str | None, frontend, tgt_vocab, identity: dict | None = None) -> None:
  """Writes the pair under a temporary name and renames it into place (a complete folder, or none); `identity`
  (the data's, identity.data_identity) is recorded in its manifest, for whoever wonders what a folder holds."""
  if cache_key is None:
    return
  final = os.path.join(data_dir, _FOLDER, cache_key)
  if os.path.exists(final):
    return
  tmp = fileio.make_temp_dir(os.path.join(data_dir, _FOLDER), f'.tmp-{cache_key}-')
  try:
    manifest = {}
    for side, vocab in (('src', frontend), ('tgt', tgt_vocab)):
      path = os.path.join(tmp, f'vocab.{side}.json')
      vocab.save(path)
      manifest[os.path.basename(path)] = fileio.sha256_file(path)
    manifest['data_identity'] = identity
    fileio.write_json(os.path.join(tmp, 'manifest.json'), manifest, indent=1)
  except BaseException:  # a failed write (disk full, a signal) leaves no temporary folder behind
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  fileio.commit_dir(tmp, final)  # False: another process committed its copy first, which is kept
