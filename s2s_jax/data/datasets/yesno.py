"""Kaldi's yes/no corpus: 60 recordings of eight words by one speaker. waves_yesno/*.wav (labels in the name: 0 = no,
1 = yes): train = the first 40 names in sorted order, test = the last 20 (there is no validation split: evaluate on
train)."""

import glob
import os

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

YESNO_FOLDER = 'waves_yesno'
YESNO_TRAIN = 40


def yesno_transcript(filename: str) -> str:
  """'0_1_1_0_0_1_1_0.wav' -> 'no yes yes no no yes yes no'; ValueError for any other name."""
  labels = os.path.basename(filename)[: -len('.wav')].split('_')
  if not filename.endswith('.wav') or not labels or any(x not in ('0', '1') for x in labels):
    raise ValueError(f'{filename}: a yesno file name must be 0/1 labels joined by _, e.g. 0_1_1_0_0_1_1_0.wav.')
  return ' '.join('yes' if x == '1' else 'no' for x in labels)


def _files(raw_dir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(raw_dir, YESNO_FOLDER, '*.wav')))


def _split_files(config) -> dict[str, list[str]]:
  files = [os.path.relpath(p, config.raw_dir) for p in config.raw_paths]  # sorted, as _read reads them
  return {'train': files[:YESNO_TRAIN], 'test': files[YESNO_TRAIN:]}


def _read(builder) -> dict:
  files = _files(builder.builder_config.raw_dir)
  rows = builder.read_all((f, f, yesno_transcript(f)) for f in files)
  train = set(files[:YESNO_TRAIN])
  return {
    'train': builder.examples([r for r in rows if r[0] in train]),
    'test': builder.examples([r for r in rows if r[0] not in train]),
  }


def _builder(dataset, data_config):
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import speech  # pylint: disable=g-import-not-at-top

  raw = dataset.manual_dir(data_config)
  raw, paths = speech.folder_files(dataset, data_config, [f'{YESNO_FOLDER}/*.wav'], _files(raw))
  config = speech.SpeechConfig(
    name='waves', raw_dir=raw, fingerprint=raw_files.fingerprint(paths, raw), raw_paths=tuple(paths), dataset=dataset
  )
  return speech.make_builder(config, builders.data_dir(data_config))


SPEC = spec.Dataset(
  name='yesno',
  source='audio',
  builder=_builder,
  reader=family.speech_reader,
  read=_read,
  folder='yesno',
  features=('audio', 'text'),
  split_files=_split_files,
)
