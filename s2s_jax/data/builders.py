"""TFDS builders (array_record files, no TensorFlow) for the datasets the project can make or find on disk.

Prepared data lives in `data.data_dir` (default `$S2S_CACHE_DIR` or `~/.cache/s2s_jax`) and is read back with
`tfds` data sources, whose records are `{'source': bytes, 'target': bytes}`. The generated tasks get one builder
config per parameter set, so changing a task's lengths or sizes prepares new data instead of reusing stale files.
"""

import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import importlib.util
import json
import os
import shutil

from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle
from tensorflow_datasets.proto import tf_example_pb2

from s2s_jax import fileio
from s2s_jax.data import synthetic
from s2s_jax.data import workers


class _FilesWithoutTensorFlow:
  """The part of TensorFlow that tfds' example shuffler uses (`tf.io.gfile`, `tf.errors`), on local files.

  When a split's serialized examples exceed the shuffler's memory buffer (1 GB: about 4M pairs of 40-word
  sentences), tfds spills them to temporary bucket files through `tf.io.gfile`, and without TensorFlow (not a
  dependency here) preparation failed with "No module named 'tensorflow'". Installed only when TensorFlow is absent.
  """

  class io:  # pylint: disable=invalid-name
    class gfile:  # pylint: disable=invalid-name
      GFile = staticmethod(open)
      exists = staticmethod(os.path.exists)
      remove = staticmethod(os.remove)

  class errors:  # pylint: disable=invalid-name
    class ResourceExhaustedError(OSError):
      """Never raised by local files (tfds catches it to explain a too-low open-file limit)."""


if importlib.util.find_spec('tensorflow') is None:
  tfds_shuffle.tf = _FilesWithoutTensorFlow


def default_data_dir() -> str:
  return os.environ.get('S2S_CACHE_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 's2s_jax')


def data_dir(data_config) -> str:
  """The absolute folder of prepared data: data.data_dir, else default_data_dir() (pipeline.resolve_paths writes it
  into the config)."""
  return os.path.abspath(os.path.expanduser(data_config.data_dir or default_data_dir()))


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Parameters of a generated task; the config name encodes all of them."""

  task: str = 'dates'
  num_train: int = 50_000
  num_eval: int = 2_000
  min_len: int = 1
  max_len: int = 10
  num_symbols: int = 20
  max_digits: int = 3
  seed: int = 0

  @classmethod
  def make(cls, **kw) -> 'SyntheticConfig':
    c = cls(name='x', **kw)
    parts = [c.task, f'n{c.num_train}-{c.num_eval}', f's{c.seed}']
    if c.task in ('copy', 'reverse', 'sort'):
      parts += [f'len{c.min_len}-{c.max_len}', f'sym{c.num_symbols}']
    elif c.task == 'addition':
      parts.append(f'dig{c.max_digits}')
    return dataclasses.replace(c, name='_'.join(parts))


class S2sSynthetic(tfds.core.GeneratorBasedBuilder):
  """The generated tasks of `s2s_jax.data.synthetic` (dates -> ISO, copy, reverse, sort, addition)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = []  # one config per parameter set, made on demand by synthetic_builder()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description='Generated source/target string pairs (see s2s_jax/data/synthetic.py).',
      features=tfds.features.FeaturesDict({'source': tfds.features.Text(), 'target': tfds.features.Text()}),
      supervised_keys=('source', 'target'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    sizes = {
      'train': self.builder_config.num_train,
      'validation': self.builder_config.num_eval,
      'test': self.builder_config.num_eval,
    }
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    c = self.builder_config
    pairs = synthetic.generate(
      c.task,
      split,
      num_examples=num_examples,
      seed=c.seed,
      min_len=c.min_len,
      max_len=c.max_len,
      num_symbols=c.num_symbols,
      max_digits=c.max_digits,
    )
    for i, (source, target) in enumerate(pairs):
      yield i, {'source': source, 'target': target}


@contextlib.contextmanager
def lock(data_dir: str, name: str):
  """Serialises preparation of one dataset across processes sharing a data_dir (e.g. test workers)."""
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f'.{name}.lock'), 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


MANIFEST = 'raw_manifest.json'  # beside a prepared dataset's files: the raw files it was prepared from


def raw_manifest(builder: tfds.core.DatasetBuilder) -> dict:
  """The raw files `builder` prepares from (its config's `raw_paths`, relative to its `raw_dir` when it has one):
  size, modification time and sha256 of each, with the dataset's name, config and version."""
  config = builder.builder_config
  root = getattr(config, 'raw_dir', '')
  files = []
  for path in getattr(config, 'raw_paths', ()):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
      for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
    st = os.stat(path)
    files.append(
      {
        'path': os.path.relpath(path, root) if root else path,
        'size': st.st_size,
        'mtime_ns': st.st_mtime_ns,
        'sha256': h.hexdigest(),
      }
    )
  return {'dataset': builder.name, 'config': config.name, 'version': str(builder.version), 'files': files}


def read_manifest(builder: tfds.core.DatasetBuilder) -> dict:
  """The manifest written when `builder`'s dataset was prepared (made now, once, for data prepared before
  manifests existed)."""
  path = os.path.join(os.fspath(builder.data_dir), MANIFEST)
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    manifest = raw_manifest(builder)
    fileio.write_json(path, manifest, indent=1)
    return manifest


def split_files(builder: tfds.core.DatasetBuilder, manifest: dict, split_names) -> dict[str, list[str]]:
  """split -> the raw files it is read from, in reading order (a parallel split's source file first), named as in
  `manifest`; a split the builder does not map (its `split_files()`: the corpora, speech and image builders read
  by split) is read from every raw file (Tatoeba, AESLC, FSDD: one file for all splits; generated data: none)."""
  every = [f['path'] for f in manifest['files']]
  mapped = builder.split_files() if hasattr(builder, 'split_files') else {}
  return {split: list(mapped.get(split, every)) for split in split_names}


def identity(builder: tfds.core.DatasetBuilder, manifest: dict, split_names=None) -> dict:
  """What a prepared dataset's records are: its builder, config and version, each split (by name) with the raw
  files it is read from in order (path, size, sha256 from `manifest`), and every raw file. The caller adds what is
  read from the records (features, direction: identity.data_identity). No file is hashed here: the sha256 were
  computed once, at preparation (`raw_manifest.json`). `split_names`: the prepared splits (default: the builder's)."""
  by_path = {f['path']: [f['path'], f['size'], f['sha256']] for f in manifest['files']}
  names = list(builder.info.splits) if split_names is None else list(split_names)
  mapping = split_files(builder, manifest, names)
  return {
    'builder': manifest['dataset'],
    'config': manifest['config'],
    'version': manifest['version'],
    'splits': sorted([split, [by_path.get(p, [p, None, None]) for p in paths]] for split, paths in mapping.items()),
    'files': sorted(by_path.values()),
  }


def fingerprint(identity_: dict) -> str:
  """The data fingerprint: sha256 of an identity (identity.data_identity) as canonical JSON. It keys both caches
  (vocab_cache, id_cache) and is provenance.json's `data_sha256`."""
  return hashlib.sha256(json.dumps(identity_, sort_keys=True).encode('utf-8')).hexdigest()


def legacy_fingerprint(manifest: dict) -> str:
  """The data fingerprint of the code before issue 25 (raw files sorted by path, without their splits, sides,
  features or direction; for data.name='tfds' the name and data_dir only). Never a cache key: kept only so that a
  workdir whose provenance.json records this form resumes when today's data gives the same value
  (provenance.data_history)."""
  if manifest['files']:
    key = [
      manifest['dataset'],
      manifest['version'],
      sorted((f['path'], f['size'], f['sha256']) for f in manifest['files']),
    ]
  else:
    key = [manifest['dataset'], manifest['config'], manifest['version']]
  return hashlib.sha256(json.dumps(key).encode('utf-8')).hexdigest()


def remove_incomplete(builder: tfds.core.DatasetBuilder) -> None:
  """Removes the temporary folders (`incomplete.*_<version>`) of an interrupted preparation of `builder`; call it
  under the preparation lock, where no other process is preparing."""
  parent, version = os.path.split(os.fspath(builder.data_dir))
  for folder in glob.glob(os.path.join(parent, f'incomplete.*_{version}')):
    logging.warning('Removing %s, left by an interrupted preparation.', folder)
    shutil.rmtree(folder, ignore_errors=True)


def download_and_prepare(builder: tfds.core.DatasetBuilder) -> None:
  """builder.download_and_prepare(), under the caller's lock, leaving no temporary folder if interrupted."""
  remove_incomplete(builder)
  logging.info('Preparing %s in %s.', builder.name, builder.data_dir)
  tfds.disable_progress_bar()
  try:
    builder.download_and_prepare()
  except BaseException:  # an error, or preemption.Preempted from a signal
    remove_incomplete(builder)
    raise
  read_manifest(builder)  # computed once, now


def prepare(builder: tfds.core.DatasetBuilder) -> dict[str, object]:
  """Prepares `builder` once (locked) and returns its splits as random-access data sources."""
  with lock(builder.data_dir_root, builder.name + '-' + builder.builder_config.name):
    # Made again under the lock: a builder constructed while another process was preparing has no splits.
    builder = type(builder)(config=builder.builder_config, data_dir=builder.data_dir_root, file_format='array_record')
    if not builder.is_prepared():
      download_and_prepare(builder)
  return builder.as_data_source()


def read_texts(source, features: tuple[str, ...], pool: workers.Pool | None = None) -> list[tuple[str, ...]]:
  """Every record of a prepared split as a tuple of its text `features`, in order.

  Parses the stored tf.train.Example protos directly (about 10x faster than the data source's own decoding of
  every example, which dominated the start of short runs: 3.9 s of a 54,000-example dataset). A large split is read
  and parsed in the workers of `pool` (pipeline's preparation of a text dataset opens one); without one, here.
  """
  pool = pool or workers.Pool(1)  # (a pool of 1 runs here and starts nothing)
  out = []
  for part in pool.map(_read_records, range(len(source)), source.data_source, features):
    out.extend(part)
  return out


def _read_records(indices: range, data_source, features: tuple[str, ...]) -> list[tuple[str, ...]]:
  """The parsed records `indices` of an array_record data source (which pickles as its file paths)."""
  out = []
  for record in data_source.__getitems__(list(indices)):
    feature = tf_example_pb2.Example.FromString(record).features.feature
    out.append(tuple(b''.join(feature[name].bytes_list.value).decode('utf-8') for name in features))
  return out


def synthetic_builder(data_config, data_dir: str) -> S2sSynthetic:
  config = SyntheticConfig.make(
    task=data_config.name,
    num_train=data_config.num_train_examples,
    num_eval=data_config.num_eval_examples,
    min_len=data_config.task_min_len,
    max_len=data_config.task_max_len,
    num_symbols=data_config.task_num_symbols,
    max_digits=data_config.task_max_digits,
    seed=data_config.seed,
  )
  return S2sSynthetic(config=config, data_dir=data_dir, file_format='array_record')


def generated_builder(data_config) -> S2sSynthetic:
  """The builder of a generated task (data.name one of synthetic.TASKS) in data.data_dir."""
  return synthetic_builder(data_config, data_dir(data_config))
