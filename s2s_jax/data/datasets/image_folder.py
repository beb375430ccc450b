"""Image files listed with captions: data.files = 'train=captions.tsv;test=test.tsv', lines `IMAGE_PATH<TAB>caption`
(paths relative to the TSV; a Flickr8k-style `name.jpg#2` suffix is dropped), resized to data.image_height x
data.image_width x data.image_channels."""

import hashlib
import json
import os

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec


def _image_path(tsv: str, field: str) -> str:
  name = field.strip()
  name = name.rsplit('#', 1)[0] if '#' in name and name.rsplit('#', 1)[1].isdigit() else name
  return os.path.join(os.path.dirname(tsv), name)


def _read(builder) -> dict:
  from s2s_jax.data import images  # pylint: disable=g-import-not-at-top

  c = builder.builder_config
  out, skipped = {}, []
  for split, (tsv,) in c.files:
    rows = []
    for n, line in enumerate(raw_files.read_lines(tsv), 1):
      fields = line.split('\t')
      if len(fields) != 2 or not fields[0].strip():
        raise ValueError(f'{tsv}:{n}: expected IMAGE_PATH<TAB>caption, found {line[:80]!r}.')
      path = _image_path(tsv, fields[0])
      try:
        rows.append((path, images.read_image(path, c.height, c.width, c.channels), fields[1]))
      except ValueError as e:
        if split != 'train':  # evaluation examples are never dropped: a missing one would change the score
          raise ValueError(
            f'{tsv}:{n}: {e} Examples of the {split!r} split are never dropped; fix the image or remove its line.'
          ) from e
        skipped.append(str(e))
    out[split] = builder.examples(rows)
  builder.info.metadata['skipped_images'] = skipped
  return out


def _builder(dataset, data_config):
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top
  from s2s_jax.data import image_datasets  # pylint: disable=g-import-not-at-top

  d = data_config
  size = dict(height=d.image_height, width=d.image_width, channels=d.image_channels)
  files = raw_files.resolve_files(d.files)
  if bad := [f'{s}={",".join(p)}' for s, p in files.items() if len(p) != 1]:
    raise ValueError(f'data.name={dataset.name!r} takes one TSV per split (SPLIT=captions.tsv), got {bad}.')
  image_files = sorted(
    {
      p
      for ps in files.values()
      for line in raw_files.read_lines(ps[0])
      if os.path.isfile(p := _image_path(ps[0], line.split('\t')[0]))
    }
  )
  raw_paths = [p for ps in files.values() for p in ps] + image_files
  fp = raw_files.fingerprint(raw_paths)
  key = '|'.join(f'{s}={p[0]}' for s, p in files.items()) + json.dumps(size) + fp
  config = image_datasets.ImageConfig(
    name='files-' + hashlib.sha256(key.encode()).hexdigest()[:12],
    files=tuple(files.items()),
    fingerprint=fp,
    raw_paths=tuple(raw_paths),
    dataset=dataset,
    **size,
  )
  return image_datasets.make_builder(config, builders.data_dir(d))


SPEC = spec.Dataset(
  name='image_folder',
  source='image',
  builder=_builder,
  reader=family.image_reader,
  read=_read,
  needs=(spec.files_needed("'train=captions.tsv;test=test.tsv' (lines IMAGE_PATH<TAB>caption)"),),
  features=('image', 'caption'),
)
