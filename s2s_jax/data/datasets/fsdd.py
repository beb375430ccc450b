"""Free Spoken Digit Dataset (FSDD) recordings joined into connected-digit utterances.

recordings.tar.gz ({digit}_{speaker}_{index}.wav, 8 kHz): utterances of 1 to data.task_max_len recordings (50-300
ms silent gaps, 100 ms silence at both ends), each built only from its own split's recordings: train (speakers other
than theo, index >= 10), validation (index 5-9, held out from train), test_speaker (speaker theo: never heard in
training), test_random (index 0-4: the official test recordings). data.num_train_examples / num_eval_examples
utterances.
"""

import os
import tarfile

import numpy as np

from s2s_jax.data import DIGIT_WORDS
from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

FSDD_ARCHIVE = 'recordings.tar.gz'
FSDD_TEST_SPEAKER = 'theo'
FSDD_SPLITS = ('train', 'validation', 'test_speaker', 'test_random')


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


def _named(prefix: str, utterances, rate: int):
  for i, (samples, text) in enumerate(utterances):
    yield f'{prefix}/{i}', samples, rate, text


def _read(builder) -> dict:
  c = builder.builder_config
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
  for name, samples, rate, digit in builder.read_all(items):  # noqa: B007  (the clips' rate, read after the loop)
    by_split[where[name]].append((samples, int(digit)))
  sizes = {'train': c.num_train, 'validation': c.num_eval, 'test_speaker': c.num_eval, 'test_random': c.num_eval}
  out = {}
  for split, recordings in by_split.items():
    if not recordings:
      raise ValueError(f'{path}: no readable recording falls into split {split!r}.')
    rng = np.random.default_rng([c.seed, FSDD_SPLITS.index(split)])
    utterances = connect_digits(recordings, sizes[split], rng, rate, c.max_digits)
    out[split] = builder.examples(_named(f'fsdd/{split}', utterances, rate))
  return out


def _builder(dataset, data_config):
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import speech  # pylint: disable=g-import-not-at-top

  d = data_config
  raw, paths = speech.folder_files(dataset, d, [FSDD_ARCHIVE], [os.path.join(dataset.manual_dir(d), FSDD_ARCHIVE)])
  config = speech.SpeechConfig(
    name=f'n{d.num_train_examples}-{d.num_eval_examples}_d{d.task_max_len}_s{d.seed}',
    raw_dir=raw,
    num_train=d.num_train_examples,
    num_eval=d.num_eval_examples,
    max_digits=d.task_max_len,
    seed=d.seed,
    fingerprint=raw_files.fingerprint(paths, raw),
    raw_paths=tuple(paths),
    dataset=dataset,
  )
  return speech.make_builder(config, builders.data_dir(d))


SPEC = spec.Dataset(
  name='fsdd',
  source='audio',
  builder=_builder,
  reader=family.speech_reader,
  read=_read,
  folder='fsdd',
  features=('audio', 'text'),
)
