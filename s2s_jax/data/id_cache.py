"""Token ids prepared once: the encoded splits of a text dataset as array_record files, read by random access.

  data.data_dir/ids/<key>/
    <split>.array_record   one record per kept example: int32 [len(source ids), source ids..., target ids...]
    <split>.lengths.npy    int32 [N, 2]: source and target steps of each record (the length index)
    <split>.text.json      the raw sources, targets and reference streams of the kept examples (what is scored and
                           shown; read only when asked for)
    report.json            each split's data-report entry (counts, filtered, truncated, lengths, OOV rates)
    COMMIT                 written last: every file's size and sha256, and the data identity the ids were made from
    DAMAGED                only after a failed read (see below)

The key hashes VERSION, the data fingerprint (the sha256 of identity.data_identity: data.name, builder config and
version, each split by name with its raw files in order and their sha256 and sizes, the source and target features
and the direction; for data.name='tfds' its prepared dataset_info.json and record files), both vocabularies' sha256
and the length policy, so any change to what the ids would be makes a new folder: swapped sides or splits, the
other direction (also with a shared vocabulary), a renamed split, a TFDS dataset prepared again. An older code
version's cache (another VERSION) is never read. The folder is written under a temporary name and renamed when
complete. Encoding a large split runs in worker processes (s2s_jax/data/workers.py, one per core), in order, with
progress in the log. Records are stored uncompressed in chunks of 64 (see _GROUP) and read in batches (one call per
batch: a call costs far more than a record).

Damage. Opening a cache checks every file's size and the sha256 of the small ones (lengths, report); a folder that
fails is removed with a warning and built again. The large files are not hashed at every start: the record files
carry Riegeli's own checksums (a damaged record is an error when read, never wrong ids) and the texts are hashed
when first read. A read that fails raises `DamagedCacheError` naming the folder and what to do, and leaves a
`DAMAGED` note in the folder; the next start then checks every file against its COMMIT sha256 and builds a damaged
cache again (the ids are deterministic: a resumed run continues exactly).
"""

import contextlib
import glob
import hashlib
import json
import logging as logging_std
import os
import shutil
import time

from absl import logging
from array_record.python import array_record_data_source
from array_record.python import array_record_module
import numpy as np

from s2s_jax import fileio
from s2s_jax.data import encoding
from s2s_jax.data import workers

VERSION = 3  # 2: records in groups of 64; 3: keyed by the data identity (issue 25), every file's sha256 in COMMIT
FOLDER = 'ids'
_COMMIT = 'COMMIT'
_DAMAGED = 'DAMAGED'
_PROGRESS_S = 10.0
# Records per array_record chunk. The reader keeps an index entry per chunk: with groups of 1 it held about 400 bytes
# per record once reads began (404 MB for 1M pairs), with 64 about 16 MB, and a batched random read costs 6.8 us per
# record instead of 12.3 (measured on 1M records of 200 bytes).
_GROUP = 64


class _GroupSizeNotice(logging_std.Filter):
  """Drops array_record's ERROR line for files written with groups of more than 1 record ("Grain requires group
  size 1 for good performance"), logged at every open of every split: these groups are chosen, measured above, and
  read in batches."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    return 'Grain requires group size 1' not in str(record.msg)


logging.get_absl_logger().addFilter(_GroupSizeNotice())


def key(fingerprint: str, src_vocab, tgt_vocab, policy: encoding.LengthPolicy) -> str | None:
  """The cache key of the ids of these data, vocabularies and length policy; None without a data fingerprint."""
  if not fingerprint:
    return None
  settings = [VERSION, fingerprint, src_vocab.sha256(), tgt_vocab.sha256(), sorted(vars(policy).items())]
  return hashlib.sha256(json.dumps(settings).encode('utf-8')).hexdigest()[:20]


def folder(data_dir: str, cache_key: str) -> str:
  return os.path.join(data_dir, FOLDER, cache_key)


class DamagedCacheError(RuntimeError):
  """A file of a committed id cache could not be read (its content no longer matches what was written)."""


def _damaged(path: str, error: BaseException) -> DamagedCacheError:
  """The error for a failed read of `path` in a cache folder, after leaving the DAMAGED note there (best effort: a
  read-only data_dir keeps no note, and the message says what to do in any case)."""
  cache = os.path.dirname(path)
  with contextlib.suppress(OSError):
    fileio.write_json(os.path.join(cache, _DAMAGED), {'file': os.path.basename(path), 'error': str(error)}, indent=1)
  return DamagedCacheError(
    f'Reading {os.path.basename(path)} of the id cache {cache} failed ({error}). Start the run again: the cache is '
    f'then checked against its COMMIT and, if damaged, encoded again from the data (the same ids: a resumed run '
    f'continues exactly); or delete {cache} yourself.'
  )


def _unrecord(record: bytes) -> tuple[np.ndarray, np.ndarray]:
  a = np.frombuffer(record, np.int32)
  n = int(a[0])
  return a[1 : 1 + n], a[1 + n :]


class RecordPairs:
  """Random access to a stored split's (source ids, target ids) pairs; `reads` counts the records read here."""

  def __init__(self, path: str, lengths: np.ndarray):
    self.path, self.lengths, self.reads = path, lengths, 0
    self._source = None  # opened on first use (and again after pickling, e.g. in a grain worker)

  def __len__(self) -> int:
    return len(self.lengths)

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def pairs(self, indices) -> list[tuple[np.ndarray, np.ndarray]]:
    indices = [int(i) for i in indices]
    if bad := [i for i in indices if not 0 <= i < len(self.lengths)]:
      raise IndexError(f'{self.path} has {len(self.lengths)} records; asked for {bad[:5]}')
    try:
      if self._source is None:
        self._source = array_record_data_source.ArrayRecordDataSource([self.path])
      records = self._source.__getitems__(indices)
    except (RuntimeError, OSError, ValueError) as e:  # Riegeli: "Corrupted Riegeli/records file: ... hash mismatch"
      raise _damaged(self.path, e) from e
    self.reads += len(indices)
    return [_unrecord(r) for r in records]

  def side(self, index: int) -> '_Side':
    return _Side(self, index)


class _Side:
  """The source (0) or target (1) ids of a RecordPairs as a read-only sequence."""

  def __init__(self, store: RecordPairs, index: int):
    self._store, self._index = store, index

  def __len__(self) -> int:
    return len(self._store)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [pair[self._index] for pair in self._store.pairs(range(len(self))[i])]
    return self._store.pairs([i])[0][self._index]

  def __iter__(self):
    for start in range(0, len(self), 1024):
      yield from (pair[self._index] for pair in self._store.pairs(range(start, min(len(self), start + 1024))))


class Texts:
  """The raw text of a stored split (sources, targets, reference streams), read from disk when first asked for."""

  def __init__(self, path: str, count: int, sha256: str):
    self._path, self._count, self._sha256, self._data = path, count, sha256, None

  def _load(self) -> dict:
    if self._data is None:
      with open(self._path, 'rb') as f:
        raw = f.read()
      if hashlib.sha256(raw).hexdigest() != self._sha256:
        raise _damaged(self._path, ValueError('it does not match its sha256 in COMMIT'))
      self._data = json.loads(raw)
    return self._data

  def field(self, name: str) -> '_TextField':
    return _TextField(self, name)


class _TextField:
  """One field of Texts as a sequence (its length known without reading the file)."""

  def __init__(self, texts: Texts, name: str):
    self._texts, self._name = texts, name

  def __len__(self) -> int:
    return self._texts._count  # pylint: disable=protected-access

  def __getitem__(self, i):
    return self._texts._load()[self._name][i]  # pylint: disable=protected-access

  def __iter__(self):
    return iter(self._texts._load()[self._name])  # pylint: disable=protected-access

  def __eq__(self, other) -> bool:
    return list(self) == list(other)


_LAZY = ('.array_record', '.text.json')  # not hashed at every start (large; checked when read, see the docstring)


def _read_note(path: str) -> str:
  """What the DAMAGED note of a cache folder says ('' without one)."""
  try:
    with open(os.path.join(path, _DAMAGED), encoding='utf-8') as f:
      note = json.load(f)
    return f'{note["file"]}: {note["error"]}'
  except FileNotFoundError:
    return ''
  except (OSError, ValueError, KeyError, TypeError):
    return 'an unreadable DAMAGED note'


def load(data_dir: str, cache_key: str | None):
  """{split: (RecordPairs, Texts, has_references)} and the report of a committed cache, or None (absent; or
  damaged: then removed with a warning)."""
  if cache_key is None:
    return None
  path = folder(data_dir, cache_key)
  if not os.path.isdir(path):
    return None
  try:
    with open(os.path.join(path, _COMMIT), encoding='utf-8') as f:
      commit = json.load(f)
    for name, size in commit['sizes'].items():
      if os.path.getsize(os.path.join(path, name)) != size:
        raise ValueError(f'{name} has {os.path.getsize(os.path.join(path, name))} bytes, COMMIT says {size}')
    note = _read_note(path)
    for name, digest in commit['sha256'].items():
      if (note or not name.endswith(_LAZY)) and fileio.sha256_file(os.path.join(path, name)) != digest:
        raise ValueError(f'{name} does not match its sha256 in COMMIT' + (f' (a read failed: {note})' if note else ''))
    if note:  # every file matches: the failed read was not the files' content (e.g. a passing I/O error)
      logging.warning(
        'A read of the id cache %s failed earlier (%s), but every file matches its sha256 in COMMIT; using it.',
        path,
        note,
      )
      with contextlib.suppress(OSError):
        os.remove(os.path.join(path, _DAMAGED))
    with open(os.path.join(path, 'report.json'), encoding='utf-8') as f:
      report = json.load(f)
    splits = {}
    for split, count in commit['splits'].items():
      lengths = np.load(os.path.join(path, f'{split}.lengths.npy'))
      if lengths.shape != (count, 2):
        raise ValueError(f'{split}.lengths.npy has shape {lengths.shape}, COMMIT says {count} examples')
      text = f'{split}.text.json'
      splits[split] = (
        RecordPairs(os.path.join(path, f'{split}.array_record'), lengths),
        Texts(os.path.join(path, text), count, commit['sha256'][text]),
        split in commit['with_references'],
      )
    return splits, report
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning('The id cache %s is damaged (%s); removing it and encoding the data again.', path, e)
    shutil.rmtree(path, ignore_errors=True)
    return None


def _encode_chunk(pairs, train: bool, src_vocab, tgt_vocab, policy) -> tuple[encoding.Encoded, bytes, list[int]]:
  """A chunk's counts (its `Encoded`, whose id lists hold the kept examples' lengths), its records concatenated and
  their byte offsets: what a worker sends back (a few large objects, cheap to pickle)."""
  flat = encoding.encode_flat(pairs, src_vocab, tgt_vocab, policy, train)
  blob, offsets = flat.records()
  flat.encoded.src_ids = flat.lengths['source'].tolist()
  flat.encoded.tgt_ids = flat.lengths['target'].tolist()
  return flat.encoded, blob, offsets


def _progress(split: str, done: int, total: int, seconds: float) -> None:
  rate = done / max(seconds, 1e-9)
  logging.info(
    'Encoding %s: %d / %d pairs (%.0f pairs/s, ETA %.0f s).', split, done, total, rate, (total - done) / rate
  )


def build(
  data_dir: str,
  cache_key: str,
  raw: dict,
  references: dict,
  src_vocab,
  tgt_vocab,
  policy,
  pool=None,
  identity: dict | None = None,
) -> None:
  """Encodes every split of `raw` (split -> [(source, target)]) and commits the cache folder; a large split in the
  worker processes of `pool` (a `workers.Pool`; default: a new one). `identity` (the data's, identity.data_identity)
  is recorded in COMMIT, for whoever wonders what a folder holds."""
  if pool is None:
    with workers.Pool() as pool:
      return build(data_dir, cache_key, raw, references, src_vocab, tgt_vocab, policy, pool, identity)
  final = folder(data_dir, cache_key)
  for stale in glob.glob(os.path.join(data_dir, FOLDER, f'.tmp-{cache_key}-*')):  # a killed build's (under the lock)
    shutil.rmtree(stale, ignore_errors=True)
  tmp = fileio.make_temp_dir(os.path.join(data_dir, FOLDER), f'.tmp-{cache_key}-')
  try:
    report, counts = {}, {}
    for split, pairs in raw.items():
      start = last = time.time()
      merged = None
      writer = array_record_module.ArrayRecordWriter(
        os.path.join(tmp, f'{split}.array_record'), f'group_size:{_GROUP},uncompressed'
      )
      chunks = pool.map(_encode_chunk, pairs, split == 'train', src_vocab, tgt_vocab, policy)
      for chunk, blob, offsets in chunks:
        for begin, end in zip(offsets[:-1], offsets[1:]):
          writer.write(blob[begin:end])
        if merged is None:
          merged = chunk
        else:
          merged.merge(chunk)
        if time.time() - last > _PROGRESS_S:
          _progress(split, len(merged.lengths['source']), len(pairs), time.time() - start)
          last = time.time()
      writer.close()
      if merged is None:
        merged = encoding.encode([], src_vocab, tgt_vocab, policy, split == 'train')
      lengths = np.stack([np.asarray(merged.src_ids, np.int32), np.asarray(merged.tgt_ids, np.int32)], axis=1)
      np.save(os.path.join(tmp, f'{split}.lengths.npy'), lengths.reshape(-1, 2))
      streams = references.get(split) if split != 'train' else None  # evaluation splits: never filtered
      if streams and not all(len(x) == len(pairs) for x in streams):
        raise ValueError(f'The reference streams of split {split!r} do not match its {len(pairs)} examples.')
      texts = {
        'sources': [pairs[i][0] for i in merged.kept],
        'targets': [pairs[i][1] for i in merged.kept],
        'references': streams,
      }
      with open(os.path.join(tmp, f'{split}.text.json'), 'w', encoding='utf-8') as f:
        json.dump(texts, f, ensure_ascii=False)
      report[split], counts[split] = encoding.report(merged), len(merged.kept)
      if streams:
        report[split]['references_per_example'] = len(streams)
      elapsed = max(time.time() - start, 1e-9)
      logging.info('Encoded %s: %d pairs in %.1f s (%.0f pairs/s).', split, len(pairs), elapsed, len(pairs) / elapsed)
    with open(os.path.join(tmp, 'report.json'), 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1)
    files = sorted(os.listdir(tmp))
    commit = {
      'version': VERSION,
      'splits': counts,
      'with_references': sorted(s for s in raw if s != 'train' and references.get(s)),
      'sizes': {name: os.path.getsize(os.path.join(tmp, name)) for name in files},
      'sha256': {name: fileio.sha256_file(os.path.join(tmp, name)) for name in files},
      'data_identity': identity,
    }
    with open(os.path.join(tmp, _COMMIT), 'w', encoding='utf-8') as f:
      json.dump(commit, f, indent=1)
    fileio.commit_dir(tmp, final)  # False: another process committed first, and its copy is kept
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
