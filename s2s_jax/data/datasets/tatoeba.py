"""Tatoeba English-French pairs from manythings.org (CC BY 2.0): fra.txt.gz (English TAB French [TAB attribution])
-> train / validation / test by `tatoeba_split` of the English side. The export changes with every release and has
no published checksum: its sha256 is only recorded (in the prepared dataset's manifest and every run's
provenance.json)."""

import gzip
import hashlib
import io
import os
import zipfile

from absl import logging

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

_FILE = 'fra.txt.gz'
_SPLITS = ('train', 'validation', 'test')


def tatoeba_split(english: str) -> str:
  """The split of a Tatoeba pair, from its English side alone.

  Rule: key = the English sentence lowercased with whitespace runs collapsed to one space and stripped; bucket =
  the first 8 bytes of sha256(key as UTF-8), big-endian, mod 100; bucket 0-1 -> validation, 2-3 -> test, else train
  (about 2% / 2% / 96%). All translations of one English sentence share a split, and a pair's split never depends on
  the rest of the file, so it is stable across versions of fra.txt.
  """
  key = ' '.join(english.lower().split()).encode('utf-8')
  bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], 'big') % 100
  return 'validation' if bucket < 2 else 'test' if bucket < 4 else 'train'


def _read(config) -> dict[str, dict[str, list[str]]]:
  path = os.path.join(config.raw_dir, _FILE)
  splits = {s: {'en': [], 'fr': []} for s in _SPLITS}
  for en, fr in zip(*raw_files.tsv_fields(path, 'English<TAB>French<TAB>attribution', exact=False)):
    split = splits[tatoeba_split(en)]
    split['en'].append(en)
    split['fr'].append(fr)
  for s in [s for s, cols in splits.items() if not cols['en']]:
    logging.warning('%s: no pair falls into split %r (the file is too small); it is left out.', path, s)
    del splits[s]
  return splits


def _unzip(data: bytes) -> bytes:
  """fra-eng.zip holds fra.txt; it is stored gzipped, like ../shared/data."""
  with zipfile.ZipFile(io.BytesIO(data)) as z:
    return gzip.compress(z.read(next(n for n in z.namelist() if os.path.basename(n) == 'fra.txt')))


_URL = 'https://www.manythings.org/anki/fra-eng.zip'
SPEC = family.corpus(
  name='tatoeba',
  read=_read,
  needs=(spec.LANGS,),
  folder='tatoeba_fra_eng',
  languages=('en', 'fr'),
  raw={split: _FILE for split in _SPLITS},
  url=_URL,
  downloads={_FILE: spec.Download(_URL, unpack=_unzip)},
)
