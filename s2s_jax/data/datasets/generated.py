"""The generated tasks (dates -> ISO, copy, reverse, sort, addition: s2s_jax/data/synthetic.py): no raw files; one
TFDS builder (`s2s_synthetic`, builders.S2sSynthetic) with a config per task and parameter set."""

from s2s_jax.data import synthetic
from s2s_jax.data.datasets import spec


def _builder(dataset, data_config):
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top

  del dataset  # the task is data.name
  return builders.generated_builder(data_config)


def _sources(dataset, data_config) -> dict:
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top

  return builders.prepare(_builder(dataset, data_config))


def _reader(dataset, data_config, pool=None):
  """split -> (source, target) strings of a generated task (prepared once); nothing is ever skipped."""
  from s2s_jax.data import builders  # pylint: disable=g-import-not-at-top

  sources = _sources(dataset, data_config)
  return {split: builders.read_texts(source, ('source', 'target'), pool) for split, source in sources.items()}, []


SPECS = tuple(
  spec.Dataset(
    name=task,
    source='text',
    builder=_builder,
    reader=_reader,
    sources=_sources,
    features=('source', 'target'),
    tfds_name='s2s_synthetic',
  )
  for task in synthetic.TASKS
)
