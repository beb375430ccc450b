"""Speech datasets as TFDS builders (array_record, no TensorFlow): FSDD connected digits, yes/no, an audio folder.

Records are {'audio': int16 samples, 'rate': Hz, 'text': transcript, 'name': where the audio came from}; log-mel
features (s2s_jax/data/audio.py) are computed when the data is loaded, not stored, so changing the frontend never
needs the data prepared again.

  fsdd          recordings.tar.gz ({digit}_{speaker}_{index}.wav, 8 kHz): connected-digit utterances of 1 to
                data.max_digits recordings (50-300 ms silent gaps, 100 ms silence at both ends), each built only
                from its own split's recordings: train (speakers other than theo, index >= 10), validation (index
                5-9, held out from train), test_speaker (speaker theo: never heard in training), test_random (index
                0-4: the official test recordings). data.num_train_examples / num_eval_examples utterances.
  yesno         waves_yesno/*.wav (eight words per file, labels in the name: 0 = no, 1 = yes): train = the first 40
                names in sorted order, test = the last 20 (there is no validation split: evaluate on train).
  audio_folder  data.files = 'train=train.tsv;test=test.tsv': lines `AUDIO_PATH<TAB>transcript`, paths relative
                to the TSV's folder.
Unreadable or empty audio files are counted, skipped and listed in data_report.json (`skipped_audio`); a sample
rate differing from the others' is an error naming the file.
"""

import dataclasses
import glob
import hashlib
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from s2s_jax.data import audio
from s2s_jax.data import DIGIT_WORDS
from s2s_jax.data import builders
from s2s_jax.data import corpora
from s2s_jax.data import raw_files
from s2s_jax.data import registry

FOLDERS = registry.folders('speech')  # data.name -> its folder of the shared data root
FSDD_ARCHIVE = 'recordings.tar.gz'
FSDD_TEST_SPEAKER = 'theo'
FSDD_SPLITS = ('train', 'validation', 'test_speaker', 'test_random')
YESNO_FOLDER = 'waves_yesno'
YESNO_TRAIN = 40


def fsdd_split(speaker: str, index: int) -> str:
  """The split of one FSDD recording (see the module docstring)."""
  if speaker == FSDD_TEST_SPEAKER:
    return 'test_speaker'
  return 'test_random' if index < 5 else 'validation' if index < 10 else 'train'


def connect_digits(
  recordings: list[tuple[np.ndarray, int]],
  num: int,
  rng: np.random.Generator,
  rate: int,
  max_digits: int = 7,
  gap_ms: tuple[float, float] = (50.0, 300.0),
):
  """Yields `num` (int16 samples, digit words) utterances of 1..max_digits random recordings (samples, digit)."""
  edge = np.zeros(int(rate * 0.1), np.int16)
  for _ in range(num):
    picks = rng.integers(0, len(recordings), rng.integers(1, max_digits + 1))
    parts, words = [edge], []
    for j, p in enumerate(picks):
      if j:
        parts.append(np.zeros(int(rate * rng.uniform(*gap_ms) / 1000), np.int16))
      parts.append(recordings[p][0])
      words.append(DIGIT_WORDS[recordings[p][1]])
    parts.append(edge)
    yield np.concatenate(parts), ' '.join(words)


def yesno_transcript(filename: str) -> str:
  """'0_1_1_0_0_1_1_0.wav' -> 'no yes yes no no yes yes no'; ValueError for any other name."""
  labels = os.path.basename(filename)[: -len('.wav')].split('_')
  if not filename.endswith('.wav') or not labels or any(x not in ('0', '1') for x in labels):
    raise ValueError(f'{filename}: a yesno file name must be 0/1 labels joined by _, e.g. 0_1_1_0_0_1_1_0.wav.')
  return ' '.join('yes' if x == '1' else 'no' for x in labels)


def _int16(data, name: str) -> tuple[np.ndarray, int]:
  samples, rate = audio.read_wav(data, name)
  return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16), rate


@dataclasses.dataclass
class SpeechConfig(tfds.core.BuilderConfig):
  """Where the raw audio is and how utterances are made; `fingerprint` detects changed raw files."""

  raw_dir: str = ''
  files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # audio_folder: ((split, (tsv,)), ...)
  num_train: int = 0
  num_eval: int = 0
  max_digits: int = 7
  seed: int = 0
  fingerprint: str = ''
  raw_paths: tuple[str, ...] = ()  # hashed into the dataset's manifest when it is prepared


class _Speech(tfds.core.GeneratorBasedBuilder):
  """Shared parts: the record features, unreadable files counted in the metadata, one sample rate."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = []

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=(self.__doc__ or '').strip(),
      features=tfds.features.FeaturesDict(
        {
          'audio': tfds.features.Tensor(shape=(None,), dtype=np.int16),
          'rate': tfds.features.Scalar(np.int32),
          'text': tfds.features.Text(),
          'name': tfds.features.Text(),
        }
      ),
      disable_shuffling=True,
      metadata=tfds.core.MetadataDict(raw_files=self.builder_config.fingerprint),
    )

  def _read_all(self, items, split: str = 'train'):
    """[(name, bytes-or-path, text)] -> [(name, int16 samples, rate, text)], unreadable files skipped and noted
    (in an evaluation split of a folder dataset they are an error: evaluation examples are never dropped)."""
    out, skipped, rates = [], [], {}
    for name, data, text in items:
      try:
        samples, rate = _int16(data, name)
      except ValueError as e:
        if split != 'train':
          raise ValueError(
            f'{e} It is listed in the {split!r} split, whose examples are never dropped (a missing '
            'example would change the score); fix the file or remove its line.'
          ) from e
        skipped.append(str(e))
        continue
      rates.setdefault(rate, name)
      if len(rates) > 1:
        raise ValueError(
          f'{name} has {rate} Hz but {rates[next(iter(rates))]} has {next(iter(rates))} Hz; one '
          'dataset needs one sample rate (resample the files first).'
        )
      out.append((name, samples, rate, text))
    self.info.metadata['skipped_audio'] = self.info.metadata.get('skipped_audio', []) + skipped
    return out

  def _generate_examples(self, rows):
    for i, (name, samples, rate, text) in enumerate(rows):
      yield i, {'audio': samples, 'rate': rate, 'text': text, 'name': name}


class S2sFsdd(_Speech):
  """Free Spoken Digit Dataset recordings joined into connected-digit utterances (see the module docstring)."""

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    path = os.path.join(c.raw_dir, FSDD_ARCHIVE)
    items, where = [], {}
    try:
      with tarfile.open(path, 'r:gz') as tar:
        for member in sorted((m for m in tar if m.isfile() and m.name.endswith('.wav')), key=lambda m: m.name):
          stem = os.path.basename(member.name)[: -len('.wav')]
          digit, speaker, index = stem.split('_')
          items.append((f'{FSDD_ARCHIVE}:{member.name}', tar.extractfile(member).read(), digit))
          where[items[-1][0]] = fsdd_split(speaker, int(index))
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
      raise ValueError(f'{path}: cannot read the archive of {{digit}}_{{speaker}}_{{index}}.wav files ({e}).') from e
    by_split = {s: [] for s in FSDD_SPLITS}
    rate = 0
    for name, samples, rate, digit in self._read_all(items):
      by_split[where[name]].append((samples, int(digit)))
    sizes = {'train': c.num_train, 'validation': c.num_eval, 'test_speaker': c.num_eval, 'test_random': c.num_eval}
    out = {}
    for split, recordings in by_split.items():
      if not recordings:
        raise ValueError(f'{path}: no readable recording falls into split {split!r}.')
      rng = np.random.default_rng([c.seed, FSDD_SPLITS.index(split)])
      utterances = connect_digits(recordings, sizes[split], rng, rate, c.max_digits)
      out[split] = self._generate_examples(_named(f'fsdd/{split}', utterances, rate))
    return out


def _named(prefix: str, utterances, rate: int):
  for i, (samples, text) in enumerate(utterances):
    yield f'{prefix}/{i}', samples, rate, text


class S2sYesno(_Speech):
  """Kaldi's yes/no corpus: 60 recordings of eight words by one speaker (see the module docstring)."""

  def split_files(self) -> dict[str, list[str]]:
    c = self.builder_config
    files = [os.path.relpath(p, c.raw_dir) for p in c.raw_paths]  # sorted, as _split_generators reads them
    return {'train': files[:YESNO_TRAIN], 'test': files[YESNO_TRAIN:]}

  def _split_generators(self, dl_manager):
    del dl_manager
    files = sorted(glob.glob(os.path.join(self.builder_config.raw_dir, YESNO_FOLDER, '*.wav')))
    rows = self._read_all((f, f, yesno_transcript(f)) for f in files)
    train = {f for f in files[:YESNO_TRAIN]}
    return {
      'train': self._generate_examples([r for r in rows if r[0] in train]),
      'test': self._generate_examples([r for r in rows if r[0] not in train]),
    }


class S2sAudioFolder(_Speech):
  """Audio files listed with their transcripts in one TSV per split (see the module docstring)."""

  def split_files(self) -> dict[str, list[str]]:
    """split -> its TSV (the audio files it lists are in the manifest, hashed with the rest)."""
    return {split: list(paths) for split, paths in self.builder_config.files}

  def _split_generators(self, dl_manager):
    del dl_manager
    out = {}
    for split, (tsv,) in self.builder_config.files:
      items = []
      for n, line in enumerate(raw_files.read_lines(tsv), 1):
        fields = line.split('\t')
        if len(fields) != 2 or not fields[0].strip():
          raise ValueError(f'{tsv}:{n}: expected AUDIO_PATH<TAB>transcript, found {line[:80]!r}.')
        path = os.path.join(os.path.dirname(tsv), fields[0].strip())
        items.append((path, path, fields[1]))
      out[split] = self._generate_examples(self._read_all(items, split))
    return out


def _yesno_files(raw_dir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(raw_dir, YESNO_FOLDER, '*.wav')))


def get_builder(data_config) -> _Speech:
  """The builder of a speech dataset for these settings; checks its raw files, prepares nothing."""
  name = data_config.name
  data_dir = os.path.abspath(os.path.expanduser(data_config.data_dir or builders.default_data_dir()))
  if name == 'audio_folder':
    files = raw_files.resolve_files(data_config.files)
    if bad := [f'{s}={",".join(p)}' for s, p in files.items() if len(p) != 1]:
      raise ValueError(f"data.name='audio_folder' takes one TSV per split (SPLIT=list.tsv), got {bad}.")
    audio_files = []
    for paths in files.values():
      for line in raw_files.read_lines(paths[0]):
        path = os.path.join(os.path.dirname(paths[0]), line.split('\t')[0].strip())
        if os.path.isfile(path):
          audio_files.append(path)
    raw_paths = [p for ps in files.values() for p in ps] + audio_files
    fp = raw_files.fingerprint(raw_paths)
    key = '|'.join(f'{s}={p[0]}' for s, p in files.items()) + fp
    config = SpeechConfig(
      name='files-' + hashlib.sha256(key.encode()).hexdigest()[:12],
      files=tuple(files.items()),
      fingerprint=fp,
      raw_paths=tuple(raw_paths),
    )
    return S2sAudioFolder(config=config, data_dir=data_dir, file_format='array_record')
  raw = raw_files.resolve_manual_dir(data_config)
  expected = [FSDD_ARCHIVE] if name == 'fsdd' else [f'{YESNO_FOLDER}/*.wav']
  paths = [os.path.join(raw, FSDD_ARCHIVE)] if name == 'fsdd' else _yesno_files(raw)
  if not paths or not all(os.path.isfile(p) for p in paths):
    where = 'data.manual_dir' if data_config.manual_dir else f'$S2S_DATA_DIR/{FOLDERS[name]}'
    raise FileNotFoundError(
      f'data.name={name!r}: expected {expected} in {raw} ({where}); set data.manual_dir to '
      f'the folder holding them, or S2S_DATA_DIR to the folder holding {FOLDERS[name]}/.'
    )
  fp = raw_files.fingerprint(paths, raw)
  if name == 'fsdd':
    c = SpeechConfig(
      name=f'n{data_config.num_train_examples}-{data_config.num_eval_examples}_d'
      f'{data_config.task_max_len}_s{data_config.seed}',
      raw_dir=raw,
      num_train=data_config.num_train_examples,
      num_eval=data_config.num_eval_examples,
      max_digits=data_config.task_max_len,
      seed=data_config.seed,
      fingerprint=fp,
      raw_paths=tuple(paths),
    )
    return S2sFsdd(config=c, data_dir=data_dir, file_format='array_record')
  return S2sYesno(
    config=SpeechConfig(name='waves', raw_dir=raw, fingerprint=fp, raw_paths=tuple(paths)),
    data_dir=data_dir,
    file_format='array_record',
  )


def load_clips(data_config) -> tuple[dict[str, list[tuple[audio.Clip, str]]], list[str]]:
  """split -> (clip, transcript) of a speech dataset (prepared once), and the skipped unreadable files."""
  sources, metadata = corpora.prepare(data_config, get_builder, with_metadata=True)
  out = {}
  for split, source in sources.items():
    records = source.__getitems__(list(range(len(source))))
    out[split] = [
      (audio.Clip(r['name'].decode('utf-8'), r['audio'], int(r['rate'])), r['text'].decode('utf-8')) for r in records
    ]
  return out, list(metadata.get('skipped_audio', []))
