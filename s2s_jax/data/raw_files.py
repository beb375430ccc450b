"""Raw files: where a corpus' raw files are (data.manual_dir, the shared data root, or a download), how they are
checked and fetched (data.download=True only), and how text files are read (one reader for the whole project:
corpora, data.files, translate and evaluate inputs).
"""

import contextlib
import gzip
import hashlib
import io
import os
import re
import sys
import urllib.request
import zipfile

from absl import logging

from s2s_jax.data import builders
from s2s_jax.data import registry

FOLDERS = registry.folders('corpus')  # data.name -> its folder of the shared data root
AESLC_ARCHIVE = 'enron_subject_line.tar.gz'
LANGUAGES = {'multi30k': ('cs', 'de', 'en', 'fr'), 'tatoeba': ('en', 'fr'), 'iwslt15': ('en', 'vi')}
STEMS = {
  'multi30k': {'train': 'task1/raw/train', 'validation': 'task1/raw/val', 'test': 'task1/raw/test_2016_flickr'},
  'iwslt15': {'train': 'train', 'validation': 'tst2012', 'test': 'tst2013'},
}
URLS = {
  'multi30k': 'https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/',
  'tatoeba': 'https://www.manythings.org/anki/fra-eng.zip',
  'iwslt15': 'https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/',
  'aeslc': 'https://github.com/ryanzhumich/AESLC (enron_subject_line/, packed as enron_subject_line.tar.gz)',
}
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_data_root() -> str:
  """$S2S_DATA_DIR, else ../shared/data next to the repository root (independent of the working directory)."""
  root = os.environ.get('S2S_DATA_DIR') or os.path.join(_REPO_ROOT, '..', 'shared', 'data')
  return os.path.abspath(os.path.expanduser(root))


def resolve_manual_dir(data_config) -> str | None:
  """The absolute raw folder of a dataset with one (registry.FOLDERS): data.manual_dir or
  default_data_root()/<folder>; None for the others."""
  folders = registry.FOLDERS
  if data_config.name not in folders:
    return None
  if data_config.manual_dir:
    return os.path.abspath(os.path.expanduser(data_config.manual_dir))
  return os.path.join(default_data_root(), folders[data_config.name])


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


def expected_files(name: str, languages) -> dict[str, list[str]]:
  """split -> raw files (relative to the raw folder) of a named corpus."""
  if name == 'tatoeba':
    return {s: ['fra.txt.gz'] for s in ('train', 'validation', 'test')}
  if name == 'aeslc':
    return {s: [AESLC_ARCHIVE] for s in ('train', 'validation', 'test')}
  ext = '.gz' if name == 'multi30k' else ''
  return {split: [f'{stem}.{lang}{ext}' for lang in languages] for split, stem in STEMS[name].items()}


# sha256 of the official files that do not change upstream (Multi30k's task1/raw, repository multi30k/dataset);


_SHA256 = {
  'multi30k': {
    'test_2016_flickr.cs.gz': '200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1',
    'test_2016_flickr.de.gz': '9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8',
    'test_2016_flickr.en.gz': '611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9',
    'test_2016_flickr.fr.gz': '6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90',
    'train.cs.gz': 'a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077',
    'train.de.gz': '726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6',
    'train.en.gz': 'd79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f',
    'train.fr.gz': '622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c',
    'val.cs.gz': 'b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc',
    'val.de.gz': 'f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a',
    'val.en.gz': '14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28',
    'val.fr.gz': 'ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9',
  },
}


def check_download(name: str, rel: str, data: bytes) -> None:
  """Raises if a downloaded file's sha256 is not the known one of the official file."""
  digest = hashlib.sha256(data).hexdigest()
  expected = _SHA256.get(name, {}).get(os.path.basename(rel))
  if expected is None:
    logging.info('%s of %s has sha256 %s (no published checksum to compare with).', rel, name, digest)
  elif digest != expected:
    raise ValueError(
      f"The download of {rel} ({name}) has sha256 {digest}, not the official file's {expected}: it "
      'was corrupted or changed upstream. Nothing was saved; try again, or put the files in '
      'data.manual_dir yourself.'
    )


def download(name: str, files: list[str], dest: str) -> None:
  """Fetches the missing `files` of a named corpus from its official URL into `dest` (data.download=True only)."""
  with builders._lock(dest, f'download-{name}'):  # pylint: disable=protected-access
    for rel in files:
      path = os.path.join(dest, rel)
      if os.path.isfile(path):
        continue
      url = URLS[name] if name == 'tatoeba' else URLS[name] + os.path.basename(rel)
      logging.info('Downloading %s to %s', url, path)
      request = urllib.request.Request(url, headers={'User-Agent': 'Mozilla/5.0 (s2s_jax)'})
      with urllib.request.urlopen(request, timeout=120) as response:
        data = response.read()
      check_download(name, rel, data)
      if name == 'tatoeba':  # fra-eng.zip holds fra.txt; stored gzipped like ../shared/data
        with zipfile.ZipFile(io.BytesIO(data)) as z:
          data = gzip.compress(z.read(next(n for n in z.namelist() if os.path.basename(n) == 'fra.txt')))
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + '.part', 'wb') as f:
        f.write(data)
      os.replace(path + '.part', path)


def raw_dir(data_config, data_dir: str, languages) -> tuple[str, list[str]]:
  """The folder holding a named corpus' raw files and the files that will be read; downloads if asked to."""
  name = data_config.name
  expected = expected_files(name, languages)
  optional = expected.pop('train') if name == 'iwslt15' else []
  required = sorted({f for files in expected.values() for f in files})
  manual = raw = resolve_manual_dir(data_config)
  missing = [f for f in required + optional if not os.path.isfile(os.path.join(manual, f))]
  if data_config.download and missing and name == 'aeslc':
    raise FileNotFoundError(
      f'data.name=aeslc: {missing} not found in {manual}, and it has no single-file official '
      f'download; get enron_subject_line/ from {URLS[name]}, pack it as {AESLC_ARCHIVE} '
      '(tar czf) and put it in data.manual_dir.'
    )
  if data_config.download and missing:
    raw = os.path.join(data_dir, 'downloads', name)
    download(name, required + optional, raw)
  elif set(missing) - set(optional):
    where = (
      'data.manual_dir'
      if data_config.manual_dir
      else f'$S2S_DATA_DIR/{FOLDERS[name]} with S2S_DATA_DIR={default_data_root()}'
    )
    state = 'is missing' if not os.path.isdir(manual) else f'lacks {sorted(set(missing) - set(optional))}'
    raise FileNotFoundError(
      f'data.name={name!r}: the raw folder {manual} ({where}) {state}. Expected there: {required + optional}'
      f'{" (train files optional)" if optional else ""}. Set data.manual_dir to the folder holding them, or '
      f'S2S_DATA_DIR to the folder holding {FOLDERS[name]}/, or data.download=True to fetch them from '
      f'{URLS[name]} into {os.path.join(data_dir, "downloads", name)}.'
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
    raise ValueError("data.name='parallel_text' needs data.files, e.g. 'train=a.de,a.en;validation=b.tsv'.")
  missing = [p for paths in out.values() for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
      f'data.files names files that do not exist: {missing} (relative paths are relative to '
      f'the working directory {os.getcwd()}).'
    )
  return out
