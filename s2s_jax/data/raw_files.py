"""Raw files, generically (the facts of each dataset are in its spec, s2s_jax/data/datasets/): where a dataset's raw
files are (data.manual_dir, the shared data root, or a download), how they are checked and fetched (data.download=True
only), their fingerprint, and how text files are read (one reader for the whole project: corpora, data.files,
translate and evaluate inputs).
"""

import contextlib
import gzip
import hashlib
import os
import re
import sys
import urllib.request

from absl import logging

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_data_root() -> str:
  """$S2S_DATA_DIR, else ../shared/data next to the repository root (independent of the working directory)."""
  root = os.environ.get('S2S_DATA_DIR') or os.path.join(_REPO_ROOT, '..', 'shared', 'data')
  return os.path.abspath(os.path.expanduser(root))


def _open(path: str):
  if path == '-':
    return contextlib.nullcontext(sys.stdin.buffer)
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def read_lines(path: str) -> list[str]:
  r"""The lines of a UTF-8 text file ('-': stdin; '.gz' decompressed), for every reader of the project (training
  corpora, translate, evaluate): lines end at \n only (a \r before it is dropped; form feeds, U+2028 and other
  Unicode separators are ordinary characters), a leading BOM is dropped, and errors name the file and line."""
  lines = []
  try:
    with _open(path) as f:
      for n, line in enumerate(f, 1):
        if n == 1 and line.startswith(b'\xef\xbb\xbf'):
          line = line[3:]
        try:
          lines.append(line.rstrip(b'\r\n').decode('utf-8'))
        except UnicodeDecodeError as e:
          raise ValueError(f'{path}:{n}: invalid UTF-8 ({e.reason} at byte {e.start} of the line).') from None
  except (OSError, EOFError) as e:
    raise ValueError(f'{path}: cannot read ({e}).') from e
  return lines


def aligned_lines(files: dict[str, str]) -> dict[str, list[str]]:
  """{key: path} -> {key: lines}, checking that every file has the same number of lines."""
  columns = {key: read_lines(path) for key, path in files.items()}
  if len({len(c) for c in columns.values()}) > 1:
    counts = ', '.join(f'{files[k]}: {len(c)} lines' for k, c in columns.items())
    raise ValueError(f'Aligned files must have the same number of lines; {counts}.')
  return columns


def tsv_fields(path: str, what: str = 'source<TAB>target', exact: bool = True) -> tuple[list[str], list[str]]:
  """The two TAB-separated fields of every line (with `exact=False`, the first two of two or more: Tatoeba's
  files add an attribution column). A line with another number of fields is an error naming it: a TAB inside a
  sentence would otherwise cut it silently."""
  first, second = [], []
  for n, line in enumerate(read_lines(path), 1):
    fields = line.split('\t')
    if len(fields) < 2 or (exact and len(fields) != 2):
      raise ValueError(f'{path}:{n}: expected {what} (exactly one TAB), found {len(fields) - 1} TABs in {line[:80]!r}.')
    first.append(fields[0])
    second.append(fields[1])
  return first, second


def fingerprint(paths: list[str], root: str = '') -> str:
  h = hashlib.sha256()
  for p in paths:
    st = os.stat(p)
    h.update(f'{os.path.relpath(p, root) if root else p}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
  return h.hexdigest()[:16]


def check_download(download, rel: str, data: bytes, name: str) -> None:
  """Raises if a downloaded file's sha256 is not the published one of the official file (`download.sha256`)."""
  digest = hashlib.sha256(data).hexdigest()
  if not download.sha256:
    logging.info('%s of %s has sha256 %s (no published checksum to compare with).', rel, name, digest)
  elif digest != download.sha256:
    raise ValueError(
      f"The download of {rel} ({name}) has sha256 {digest}, not the official file's {download.sha256}: it "
      'was corrupted or changed upstream. Nothing was saved; try again, or put the files in '
      'data.manual_dir yourself.'
    )


def download(dataset, files: list[str], dest: str) -> None:
  """Fetches the missing `files` of a dataset from their official URLs (`dataset.downloads`) into `dest`
  (data.download=True only)."""
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top  (tensorflow-datasets: not at import)

  with builders.lock(dest, f'download-{dataset.name}'):
    for rel in files:
      path = os.path.join(dest, rel)
      if os.path.isfile(path):
        continue
      official = dataset.downloads[rel]
      logging.info('Downloading %s to %s', official.url, path)
      request = urllib.request.Request(official.url, headers={'User-Agent': 'Mozilla/5.0 (s2s_jax)'})
      with urllib.request.urlopen(request, timeout=120) as response:
        data = response.read()
      check_download(official, rel, data, dataset.name)
      if official.unpack:
        data = official.unpack(data)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + '.part', 'wb') as f:
        f.write(data)
      os.replace(path + '.part', path)


def raw_dir(dataset, data_config, data_dir: str, languages) -> tuple[str, list[str]]:
  """The folder holding a dataset's raw files (`dataset.expected_files(languages)`) and the files that will be
  read; downloads the missing ones if asked to (data.download=True)."""
  name = dataset.name
  expected = dataset.expected_files(languages)
  optional = [f for split in dataset.optional_splits for f in expected.pop(split, [])]
  required = sorted({f for files in expected.values() for f in files})
  manual = raw = dataset.manual_dir(data_config)
  missing = [f for f in required + optional if not os.path.isfile(os.path.join(manual, f))]
  if data_config.download and missing and not dataset.downloads:
    raise FileNotFoundError(
      f'data.name={name}: {missing} not found in {manual}, and it has no single-file official download; '
      f'{dataset.no_download}'
    )
  if data_config.download and missing:
    raw = os.path.join(data_dir, 'downloads', name)
    download(dataset, required + optional, raw)
  elif set(missing) - set(optional):
    where = (
      'data.manual_dir'
      if data_config.manual_dir
      else f'$S2S_DATA_DIR/{dataset.folder} with S2S_DATA_DIR={default_data_root()}'
    )
    state = 'is missing' if not os.path.isdir(manual) else f'lacks {sorted(set(missing) - set(optional))}'
    raise FileNotFoundError(
      f'data.name={name!r}: the raw folder {manual} ({where}) {state}. Expected there: {required + optional}'
      f'{" (train files optional)" if optional else ""}. Set data.manual_dir to the folder holding them, or '
      f'S2S_DATA_DIR to the folder holding {dataset.folder}/, or data.download=True to fetch them from '
      f'{dataset.url} into {os.path.join(data_dir, "downloads", name)}.'
    )
  present = [f for f in optional if os.path.isfile(os.path.join(raw, f))]
  if 0 < len(present) < len(optional):
    logging.warning('%s: only %s of %s present; no train split.', raw, present, optional)
  files = required + (optional if len(present) == len(optional) else [])
  return raw, [os.path.join(raw, f) for f in files]


def resolve_files(spec: str | None) -> dict[str, tuple[str, ...]]:
  """Parses data.files ('train=a.de,a.en;validation=b.tsv') into split -> absolute paths (relative to the cwd)."""
  out = {}
  for item in filter(None, (s.strip() for s in (spec or '').split(';'))):
    split, eq, rest = (s.strip() for s in item.partition('='))
    paths = tuple(os.path.abspath(os.path.expanduser(p.strip())) for p in rest.split(',') if p.strip())
    if not eq or not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]*', split) or len(paths) not in (1, 2) or split in out:
      raise ValueError(
        f'data.files item {item!r} must be SPLIT=SOURCE,TARGET or SPLIT=FILE.tsv, each split once '
        "(e.g. 'train=a.de,a.en;validation=b.tsv')."
      )
    out[split] = paths
  if not out:
    raise ValueError("data.files is empty; it names the files of each split, e.g. 'train=a.de,a.en;validation=b.tsv'.")
  missing = [p for paths in out.values() for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
      f'data.files names files that do not exist: {missing} (relative paths are relative to '
      f'the working directory {os.getcwd()}).'
    )
  return out
