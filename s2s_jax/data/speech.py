"""Speech datasets as TFDS builders (array_record, no TensorFlow): one builder class per dataset spec (FSDD connected
digits, yes/no, an audio folder: s2s_jax/data/datasets/), whose `read` gives the split generators.

Records are {'audio': int16 samples, 'rate': Hz, 'text': transcript, 'name': where the audio came from}; log-mel
features (s2s_jax/data/audio.py) are computed when the data is loaded, not stored, so changing the frontend never
needs the data prepared again. Unreadable or empty audio files are counted, skipped and listed in data_report.json
(`skipped_audio`); a sample rate differing from the others' is an error naming the file.
"""

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from s2s_jax.data import audio
from s2s_jax.data import corpora
from s2s_jax.data import raw_files


def int16(data, name: str) -> tuple[np.ndarray, int]:
  """The samples of a WAV file (path or bytes) as int16, and its rate (what preparation stores)."""
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
  dataset: Any = dataclasses.field(default=None, repr=False)  # its spec, whose `read(builder)` gives the splits


class Speech(tfds.core.GeneratorBasedBuilder, skip_registration=True):
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

  def split_files(self) -> dict[str, list[str]]:
    """split -> the raw files it is read from: the spec's `split_files`, else data.files' TSVs (the files they
    list are in the manifest, hashed with the rest), else every raw file."""
    c = self.builder_config
    if c.dataset.split_files:
      return c.dataset.split_files(c)
    return {split: list(paths) for split, paths in c.files}

  def _split_generators(self, dl_manager):
    del dl_manager
    return self.builder_config.dataset.read(self)

  def read_all(self, items, split: str = 'train'):
    """[(name, bytes-or-path, text)] -> [(name, int16 samples, rate, text)], unreadable files skipped and noted
    (in an evaluation split of a folder dataset they are an error: evaluation examples are never dropped)."""
    out, skipped, rates = [], [], {}
    for name, data, text in items:
      try:
        samples, rate = int16(data, name)
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

  def examples(self, rows):
    """A split generator of rows (name, int16 samples, rate, text)."""
    return self._generate_examples(rows)

  def _generate_examples(self, rows):
    for i, (name, samples, rate, text) in enumerate(rows):
      yield i, {'audio': samples, 'rate': rate, 'text': text, 'name': name}


def make_builder(config: SpeechConfig, data_dir: str) -> Speech:
  """The builder of `config.dataset` (its spec) with this config, in data_dir."""
  return corpora.builder_class(Speech, config.dataset.builder_name)(
    config=config, data_dir=data_dir, file_format='array_record'
  )


def files_config(dataset, data_config) -> SpeechConfig:
  """The config of a dataset listed in data.files: one TSV per split of AUDIO_PATH<TAB>transcript lines, paths
  relative to the TSV's folder."""
  files = raw_files.resolve_files(data_config.files)
  if bad := [f'{s}={",".join(p)}' for s, p in files.items() if len(p) != 1]:
    raise ValueError(f'data.name={dataset.name!r} takes one TSV per split (SPLIT=list.tsv), got {bad}.')
  audio_files = []
  for paths in files.values():
    for line in raw_files.read_lines(paths[0]):
      path = os.path.join(os.path.dirname(paths[0]), line.split('\t')[0].strip())
      if os.path.isfile(path):
        audio_files.append(path)
  raw_paths = [p for ps in files.values() for p in ps] + audio_files
  fp = raw_files.fingerprint(raw_paths)
  key = '|'.join(f'{s}={p[0]}' for s, p in files.items()) + fp
  return SpeechConfig(
    name='files-' + hashlib.sha256(key.encode()).hexdigest()[:12],
    files=tuple(files.items()),
    fingerprint=fp,
    raw_paths=tuple(raw_paths),
    dataset=dataset,
  )


def folder_files(dataset, data_config, expected: list[str], paths: list[str]) -> tuple[str, list[str]]:
  """(the raw folder, `paths`) once every one of `paths` exists; else an error naming `expected` and the folder."""
  raw = dataset.manual_dir(data_config)
  if not paths or not all(os.path.isfile(p) for p in paths):
    where = 'data.manual_dir' if data_config.manual_dir else f'$S2S_DATA_DIR/{dataset.folder}'
    raise FileNotFoundError(
      f'data.name={dataset.name!r}: expected {expected} in {raw} ({where}); set data.manual_dir to '
      f'the folder holding them, or S2S_DATA_DIR to the folder holding {dataset.folder}/.'
    )
  return raw, paths


def load_clips(dataset, data_config) -> tuple[dict[str, list[tuple[audio.Clip, str]]], list[str]]:
  """split -> (clip, transcript) of a speech dataset (prepared once), and the skipped unreadable files."""
  sources, metadata = corpora.prepare(dataset, data_config, with_metadata=True)
  out = {}
  for split, source in sources.items():
    records = source.__getitems__(list(range(len(source))))
    out[split] = [
      (audio.Clip(r['name'].decode('utf-8'), r['audio'], int(r['rate'])), r['text'].decode('utf-8')) for r in records
    ]
  return out, list(metadata.get('skipped_audio', []))
