"""Audio files listed with their transcripts: data.files = 'train=train.tsv;test=test.tsv', lines
`AUDIO_PATH<TAB>transcript`, paths relative to the TSV's folder."""

import os

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec


def _read(builder) -> dict:
  out = {}
  for split, (tsv,) in builder.builder_config.files:
    items = []
    for n, line in enumerate(raw_files.read_lines(tsv), 1):
      fields = line.split('\t')
      if len(fields) != 2 or not fields[0].strip():
        raise ValueError(f'{tsv}:{n}: expected AUDIO_PATH<TAB>transcript, found {line[:80]!r}.')
      path = os.path.join(os.path.dirname(tsv), fields[0].strip())
      items.append((path, path, fields[1]))
    out[split] = builder.examples(builder.read_all(items, split))
  return out


def _builder(dataset, data_config):
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import speech  # pylint: disable=g-import-not-at-top

  return speech.make_builder(speech.files_config(dataset, data_config), builders.data_dir(data_config))


SPEC = spec.Dataset(
  name='audio_folder',
  source='audio',
  builder=_builder,
  reader=family.speech_reader,
  read=_read,
  needs=(spec.files_needed("'train=train.tsv;test=test.tsv' (lines AUDIO_PATH<TAB>transcript)"),),
  features=('audio', 'text'),
)
