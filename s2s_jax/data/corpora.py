"""Real parallel corpora as TFDS builders (array_record, no TensorFlow): Multi30k, Tatoeba en-fr, IWSLT'15 en-vi,
user-given parallel text, and any prepared TFDS catalogue dataset.

Raw files are read from `data.manual_dir` (default `$S2S_DATA_DIR/<folder>`, CONVENTIONS §4) and prepared once into
`data.data_dir` under a file lock. Records keep raw text (only trailing newlines and `\\r` are stripped; empty lines
are kept) in file order, one Text feature per language code, so one prepared dataset serves both directions.

  multi30k      task1/raw/{train,val,test_2016_flickr}.{de,en,fr,cs}.gz -> train / validation / test; config `de-en`
  tatoeba       fra.txt.gz (English TAB French [TAB attribution]) -> train / validation / test (see `tatoeba_split`)
  iwslt15       {train,tst2012,tst2013}.{en,vi} -> train (only if both train files exist) / validation / test
  aeslc         enron_subject_line.tar.gz (train/, dev/) -> train / validation (see `aeslc_split`) / test (= dev);
                features source (email body), target (subject line), references (the annotated subject lines)
  parallel_text data.files = 'train=a.de,a.en;validation=b.tsv': two aligned files (plain or .gz) or one TSV per split
  tfds          data.tfds_name, already prepared as array_record in data.data_dir

The file lists and sizes and mtimes of the raw files are stored with the prepared data; when they change, the data
is prepared again, so stale records are never read. With `data.download=True`, missing raw files are fetched from the
official URLs into `data.data_dir/downloads/<corpus>`; nothing touches the network otherwise.
"""

import abc
import dataclasses
import hashlib
import os
import re
import shutil
import tarfile

from absl import logging
import tensorflow_datasets as tfds

from s2s_jax.data import builders
from s2s_jax.data import raw_files
from s2s_jax.data import registry

CORPORA = registry.family('corpus')  # multi30k, tatoeba, iwslt15, aeslc, parallel_text, tfds
FOLDERS = registry.folders('corpus')  # data.name -> its folder of the shared data root
# Corpora whose records are (source, target[, references]) rather than one feature per language.
_FIXED_FEATURES = {'aeslc': ('references', 'source', 'target')}


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


def aeslc_split(stem: str) -> str:
  """The split of an AESLC training email from its file stem (e.g. 'allen-p_inbox_29'): the first 8 bytes of
  sha256(stem), big-endian, mod 100 below 5 -> validation (about 5%, held out from train), else train."""
  bucket = int.from_bytes(hashlib.sha256(stem.encode('utf-8')).digest()[:8], 'big') % 100
  return 'validation' if bucket < 5 else 'train'


def parse_aeslc(text: str, name: str = '') -> dict[str, object]:
  """One AESLC `.subject` file -> {'source': body, 'target': @subject, 'references': [@ann0, @ann1, ...]}.

  The body is everything before the first `@subject` line; each section's lines are joined with single spaces.
  """
  sections, current = {'body': []}, 'body'
  for line in text.split('\n'):  # lines end at \n only, as in raw_files.read_lines
    marker = line.strip()
    if re.fullmatch(r'@(subject|ann\d+)', marker):
      current = marker[1:]
      sections[current] = []
    else:
      sections[current].append(line)
  if 'subject' not in sections:
    raise ValueError(f'{name}: no @subject line (not an AESLC .subject file?).')
  join = lambda lines: ' '.join(' '.join(lines).split())
  annotations = sorted((k for k in sections if k.startswith('ann')), key=lambda k: int(k[3:]))
  return {
    'source': join(sections['body']),
    'target': join(sections['subject']),
    'references': [join(sections[k]) for k in annotations],
  }


@dataclasses.dataclass
class CorpusConfig(tfds.core.BuilderConfig):
  """Where a corpus' raw files are; `raw_files.fingerprint` (sizes and mtimes) is stored to detect changed raw files."""

  languages: tuple[str, ...] = ()
  raw_dir: str = ''
  files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # parallel_text: ((split, (path, ...)), ...)
  fingerprint: str = ''
  raw_paths: tuple[str, ...] = ()  # hashed into the dataset's manifest when it is prepared


class _Corpus(tfds.core.GeneratorBasedBuilder):
  """Shared parts: one Text feature per language, records in file order, raw files read by `_read`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = []  # one config per language pair / file set, made on demand by get_builder()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(self.__doc__ or '').strip(),
      features=tfds.features.FeaturesDict({lang: tfds.features.Text() for lang in self.builder_config.languages}),
      disable_shuffling=True,  # file order kept: split i-th record = i-th raw line (references line up)
      metadata=tfds.core.MetadataDict(raw_files=self.builder_config.fingerprint),
    )

  @abc.abstractmethod
  def _read(self) -> dict[str, dict[str, list[str]]]:
    """split -> language -> lines (aligned)."""

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = self._read()  # everything is read and checked before anything is written
    for split, columns in splits.items():
      if not len(next(iter(columns.values()))):
        raise ValueError(f'{self.name}: split {split!r} has no lines ({self.builder_config.raw_dir or "files"}).')
    return {split: self._generate_examples(columns) for split, columns in splits.items()}

  def _generate_examples(self, columns: dict[str, list[str]]):
    for i, row in enumerate(zip(*columns.values())):
      yield i, dict(zip(columns, row))


class S2sMulti30k(_Corpus):
  """Multi30k task 1 (Elliott et al. 2016): train 29,000 / validation 1,014 / test2016 1,000 image descriptions."""

  def split_files(self) -> dict[str, list[str]]:
    return raw_files.expected_files('multi30k', self.builder_config.languages)

  def _read(self):
    c = self.builder_config
    return {
      split: raw_files.aligned_lines({lang: os.path.join(c.raw_dir, f'{stem}.{lang}.gz') for lang in c.languages})
      for split, stem in raw_files.STEMS['multi30k'].items()
    }


class S2sTatoeba(_Corpus):
  """Tatoeba English-French pairs from manythings.org (CC BY 2.0), split by `tatoeba_split` of the English side."""

  def _read(self):
    path = os.path.join(self.builder_config.raw_dir, 'fra.txt.gz')
    splits = {s: {'en': [], 'fr': []} for s in ('train', 'validation', 'test')}
    for en, fr in zip(*raw_files.tsv_fields(path, 'English<TAB>French<TAB>attribution', exact=False)):
      split = splits[tatoeba_split(en)]
      split['en'].append(en)
      split['fr'].append(fr)
    for s in [s for s, cols in splits.items() if not cols['en']]:
      logging.warning('%s: no pair falls into split %r (the file is too small); it is left out.', path, s)
      del splits[s]
    return splits


class S2sIwslt15(_Corpus):
  """IWSLT'15 English-Vietnamese (Stanford NMT version): train 133,317 / tst2012 1,553 / tst2013 1,268 TED lines."""

  def split_files(self) -> dict[str, list[str]]:
    return raw_files.expected_files('iwslt15', self.builder_config.languages)

  def _read(self):
    c = self.builder_config
    out = {}
    for split, stem in raw_files.STEMS['iwslt15'].items():
      files = {lang: os.path.join(c.raw_dir, f'{stem}.{lang}') for lang in c.languages}
      if split != 'train' or all(os.path.isfile(p) for p in files.values()):
        out[split] = raw_files.aligned_lines(files)
    return out


class S2sAeslc(_Corpus):
  """AESLC (Zhang and Tetreault 2019): Enron email bodies -> subject lines. train 14,436 emails (about 5% held out
  as validation by `aeslc_split`) / test = the dev set (1,960 emails, each with 3 annotated subject lines).

  Records: source (the body), target (the email's own subject line: teacher-forced loss and perplexity) and
  references (the annotated subject lines joined by newlines; empty in train / validation), which ROUGE scores
  against. The blind test set of the paper is not read even when present.
  """

  def _read(self):
    path = os.path.join(self.builder_config.raw_dir, raw_files.AESLC_ARCHIVE)
    splits = {s: {'references': [], 'source': [], 'target': []} for s in ('train', 'validation', 'test')}
    try:
      with tarfile.open(path, 'r:gz') as tar:
        members = sorted((m for m in tar if m.isfile() and m.name.endswith('.subject')), key=lambda m: m.name)
        for member in members:
          folder = os.path.basename(os.path.dirname(member.name))
          if folder not in ('train', 'dev'):
            continue
          stem = os.path.basename(member.name)[: -len('.subject')]
          try:
            text = tar.extractfile(member).read().decode('utf-8')
          except UnicodeDecodeError as e:
            raise ValueError(f'{path}: {member.name} is not UTF-8 ({e.reason}).') from None
          record = parse_aeslc(text, f'{path}: {member.name}')
          split = splits['test' if folder == 'dev' else aeslc_split(stem)]
          split['source'].append(record['source'])
          split['target'].append(record['target'])
          split['references'].append('\n'.join(record['references']) if folder == 'dev' else '')
    except (tarfile.TarError, OSError, EOFError) as e:
      raise ValueError(f'{path}: cannot read the archive ({e}).') from e
    for name in [s for s, cols in splits.items() if not cols['source']]:
      logging.warning('%s: no email falls into split %r; it is left out.', path, name)
      del splits[name]
    return splits


class S2sParallelText(_Corpus):
  """User-given parallel text (data.files): per split two aligned files or one TSV; features source / target."""

  def split_files(self) -> dict[str, list[str]]:
    return {split: list(paths) for split, paths in self.builder_config.files}

  def _read(self):
    out = {}
    for split, paths in self.builder_config.files:
      if len(paths) == 1:
        out[split] = dict(zip(('source', 'target'), raw_files.tsv_fields(paths[0])))
      else:
        out[split] = raw_files.aligned_lines({'source': paths[0], 'target': paths[1]})
    return out


_BUILDERS = {
  'multi30k': S2sMulti30k,
  'tatoeba': S2sTatoeba,
  'iwslt15': S2sIwslt15,
  'aeslc': S2sAeslc,
  'parallel_text': S2sParallelText,
}


# Tatoeba's export changes with every release and IWSLT'15 publishes no checksums: their hashes are only recorded
# (in the prepared dataset's manifest and so in every run's provenance.json).
def _languages(data_config, available) -> tuple[str, str]:
  src, tgt = data_config.source_lang, data_config.target_lang
  if src not in available or tgt not in available or src == tgt:
    raise ValueError(
      f'data.name={data_config.name!r}: data.source_lang and data.target_lang must be two different '
      f'codes of {", ".join(available)}; got {src!r} and {tgt!r}.'
    )
  return src, tgt


def _data_dir(data_config) -> str:
  return os.path.abspath(os.path.expanduser(data_config.data_dir or builders.default_data_dir()))


def get_builder(data_config) -> _Corpus:
  """The builder of a corpus (not tfds) for these settings; checks (or downloads) the raw files, prepares nothing."""
  name, data_dir = data_config.name, _data_dir(data_config)
  if name == 'parallel_text':
    files = raw_files.resolve_files(data_config.files)
    paths = [p for split_paths in files.values() for p in split_paths]
    fp = raw_files.fingerprint(paths)  # absolute paths, sizes and mtimes: changed files get a new config name
    key = '|'.join(f'{s}={",".join(p)}' for s, p in files.items()) + fp
    config = CorpusConfig(
      name='files-' + hashlib.sha256(key.encode()).hexdigest()[:12],
      languages=('source', 'target'),
      files=tuple(files.items()),
      fingerprint=fp,
      raw_paths=tuple(paths),
    )
  elif name in FOLDERS:
    languages = _FIXED_FEATURES.get(name) or tuple(sorted(_languages(data_config, raw_files.LANGUAGES[name])))
    raw, paths = raw_files.raw_dir(data_config, data_dir, languages)
    config = CorpusConfig(
      name='-'.join(languages),
      languages=languages,
      raw_dir=raw,
      fingerprint=raw_files.fingerprint(paths, raw),
      raw_paths=tuple(paths),
    )
  else:
    raise ValueError(f'data.name={name!r} is not one of the corpora {CORPORA[:-1]}.')
  return _BUILDERS[name](config=config, data_dir=data_dir, file_format='array_record')


def prepare(data_config, get_builder_fn=None, with_metadata: bool = False):
  """Prepares a dataset once (locked; again when its raw files changed); returns split -> data source (and, with
  `with_metadata`, the prepared dataset's metadata). `get_builder_fn(data_config)` makes the builder (default: the
  text corpora's `get_builder`; the speech datasets pass theirs)."""
  get = get_builder_fn or get_builder
  builder = get(data_config)
  config = builder.builder_config
  with builders._lock(builder.data_dir_root, f'{builder.name}-{config.name}'):  # pylint: disable=protected-access
    # A builder reads its dataset_info when constructed: one made while another process was preparing would see
    # no splits, so it is made again under the lock.
    builder = get(data_config)
    stored = tfds.core.MetadataDict()
    if builder.is_prepared():
      try:
        stored.load_metadata(builder.data_dir)
      except (OSError, ValueError):
        pass
      if stored.get('raw_files') != config.fingerprint:
        logging.warning('Raw files of %s changed since it was prepared; preparing again.', builder.data_dir)
        shutil.rmtree(builder.data_dir)
        builder = type(builder)(config=config, data_dir=builder.data_dir_root, file_format='array_record')
    if not builder.is_prepared():
      builders.download_and_prepare(builder)
      stored = builder.info.metadata
  sources = builder.as_data_source()
  return (sources, stored) if with_metadata else sources


def _tfds_builder(data_config) -> tfds.core.DatasetBuilder:
  """The builder of a prepared TFDS dataset (data.tfds_name in data.data_dir); an error saying how to prepare it."""
  name, data_dir = data_config.tfds_name, _data_dir(data_config)
  if not name:
    raise ValueError("data.name='tfds' needs data.tfds_name, e.g. 'wmt14_translate/de-en'.")
  hint = (
    f'data.tfds_name={name!r} is not prepared as array_record in data.data_dir={data_dir}; prepare it there '
    f'(e.g. `tfds build {name} --data_dir={data_dir} --file_format=array_record`) or point data.data_dir at '
    'the folder that holds it.'
  )
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    prepared = builder.is_prepared()
  except ValueError as e:  # DatasetNotFoundError lists the whole catalogue: keep only its first line
    raise ValueError(f'{hint} ({str(e).splitlines()[0]})') from None
  if not prepared or builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ValueError(hint + (f' It is prepared as {builder.info.file_format.value}.' if prepared else ''))
  return builder


def _tfds_sources(data_config) -> tuple[dict[str, object], tuple[str, ...]]:
  """A prepared TFDS dataset (data.tfds_name in data.data_dir) and its language codes (feature names)."""
  builder = _tfds_builder(data_config)
  languages = tuple(sorted(builder.info.features.keys()))
  return tfds.data_source(data_config.tfds_name, data_dir=_data_dir(data_config), download=False), languages


_EDGE = 1 << 16  # bytes at each end of a TFDS record file that its identity hashes


def _edges_sha256(path: str) -> str:
  """sha256 of a file's first and last 64 KiB: a constant-time sample of its content (a re-preparation that keeps
  every file's size almost surely changes it), where hashing whole record files (gigabytes) at every start would
  not be."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    h.update(f.read(_EDGE))
    size = os.fstat(f.fileno()).st_size
    if size > _EDGE:
      f.seek(max(_EDGE, size - _EDGE))
      h.update(f.read(_EDGE))
  return h.hexdigest()


def tfds_identity(data_config) -> dict:
  """What the records of a prepared TFDS dataset are (the data.name='tfds' part of pipeline.data_identity): its name,
  config and resolved version, the sha256 of its `dataset_info.json` (split sizes and shard lengths) and, per split,
  the names, sizes and sampled sha256 (`_edges_sha256`) of its record files. Preparing it again in place, or a newer
  version beside the old one, gives another identity; moving the folder does not."""
  builder = _tfds_builder(data_config)
  folder = os.fspath(builder.data_dir)
  with open(os.path.join(folder, 'dataset_info.json'), 'rb') as f:
    info_sha256 = hashlib.sha256(f.read()).hexdigest()
  splits = []
  for split, info in builder.info.splits.items():
    paths = [os.path.join(folder, name) for name in info.filenames]
    splits.append([split, [[os.path.basename(p), os.path.getsize(p), _edges_sha256(p)] for p in paths]])
  return {
    'builder': builder.name,
    'config': builder.builder_config.name if builder.builder_config else '',
    'version': str(builder.version),
    'dataset_info_sha256': info_sha256,
    'splits': sorted(splits),
    'files': [],
  }


def prepared_sources(data_config) -> dict[str, object]:
  """split -> random-access data source of a corpus, prepared once (data.name='tfds': prepared elsewhere)."""
  return _tfds_sources(data_config)[0] if data_config.name == 'tfds' else prepare(data_config)


def features(data_config) -> tuple[str, str]:
  """The record features a corpus' sources and targets are read from: data.source_lang and data.target_lang, or
  `source` and `target` (parallel_text, AESLC). data.name='tfds' checks them against the dataset's features."""
  if data_config.name == 'tfds':
    return _languages(data_config, tuple(sorted(_tfds_builder(data_config).info.features.keys())))
  if data_config.name in ('parallel_text', *_FIXED_FEATURES):
    return 'source', 'target'
  return data_config.source_lang, data_config.target_lang


def load_pairs(data_config) -> dict[str, list[tuple[str, str]]]:
  """split -> (source, target) strings of a corpus, source = data.source_lang (parallel_text: the files' order)."""
  src, tgt = features(data_config)
  return {split: builders.read_texts(source, (src, tgt)) for split, source in prepared_sources(data_config).items()}


def load(data_config) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
  """load_pairs with a train split required (the registry's loader of the text corpora); nothing is skipped."""
  pairs = load_pairs(data_config)
  require_split(pairs, 'train', data_config)
  return pairs, []


def load_references(data_config) -> dict[str, list[list[str]]]:
  """split -> reference streams [K][N] for the splits of a corpus with several references per example (AESLC's
  annotated subject lines); {} for every other corpus (their target is the one reference). Examples with fewer
  than K references repeat their first one, so every stream is complete."""
  if 'references' not in _FIXED_FEATURES.get(data_config.name, ()):
    return {}
  out = {}
  for split, source in prepare(data_config).items():
    rows = [r[0].split('\n') for r in builders.read_texts(source, ('references',))]
    rows = [[x for x in row if x] for row in rows]
    if not any(rows):
      continue
    if not all(rows):
      raise ValueError(f'data.name={data_config.name!r}: split {split!r} has examples without references.')
    k = max(map(len, rows))
    out[split] = [[row[j] if j < len(row) else row[0] for row in rows] for j in range(k)]
  return out


def require_split(pairs: dict[str, list[tuple[str, str]]], split: str, data_config) -> list[tuple[str, str]]:
  """pairs[split], or a ValueError naming what would provide it (e.g. the IWSLT'15 train files and their folder)."""
  if split in pairs:
    return pairs[split]
  name = data_config.name
  msg = f'data.name={name!r} has no {split!r} split; found {sorted(pairs)}.'
  if name in FOLDERS:
    languages = sorted((data_config.source_lang, data_config.target_lang))
    files = raw_files.expected_files(name, languages).get(split, [])
    msg += (
      f' It is read from {files} in {raw_files.resolve_manual_dir(data_config)} (data.manual_dir, default '
      f'$S2S_DATA_DIR/{FOLDERS[name]}); put them there, or set data.download=True to fetch them from '
      f'{raw_files.URLS[name]} into data.data_dir/downloads/{name}.'
    )
  elif name == 'parallel_text':
    msg += f" Add '{split}=SOURCE,TARGET' or '{split}=FILE.tsv' to data.files."
  elif name == 'tfds':
    msg += f' data.tfds_name={data_config.tfds_name!r} has no such split; pick one of those found.'
  raise ValueError(msg)
