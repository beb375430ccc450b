"""Reads and decodes an artifact written by `python -m s2s_jax.export` (see there for its files).

It needs jax, numpy and the project's tokenizer and frontend modules only: neither flax nor the model, decoder,
encoder or training code (a test checks `sys.modules`). Loading checks the manifest's format, every file's sha256
(a damaged or mismatched file is an error naming it) and the serialisation's calling-convention version against
the installed JAX (refused when it cannot read it; a different JAX version is a warning).

Batches are built as `inference.Decoder` builds them: inputs in order of length, `batch_size` rows padded to the
maximum source length, filler rows empty, sampling keys from each line's content. So a line's output equals
`translate --workdir` with the same settings, whichever batch it is in.
"""

import dataclasses
import json
import os
import types

from absl import logging
import jax
from jax import export as jax_export
import numpy as np

from s2s_jax import fileio
from s2s_jax.data import frontend as frontend_lib
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import vocab as vocab_lib

FORMAT = 's2s_jax.export/1'
MANIFEST = 'manifest.json'


@dataclasses.dataclass
class Hypotheses:
  """The n-best list (or the samples) of one input, best first (samples: in sample order)."""

  texts: list[str]
  scores: list[float]


def read_manifest(path: str) -> dict:
  """The manifest of the artifact folder `path`, its format checked and every file's sha256 verified."""
  where = os.path.join(path, MANIFEST)
  if not os.path.isfile(where):
    raise ValueError(f'--exported={path}: {where} does not exist; give a folder written by s2s_jax.export.')
  try:
    with open(where, encoding='utf-8') as f:
      manifest = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{where} is not a readable manifest ({e}); export the run again.') from None
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    found = manifest.get('format') if isinstance(manifest, dict) else type(manifest).__name__
    raise ValueError(f'{where}: format {found!r}, but this version of s2s_jax reads {FORMAT!r}.')
  for name, digest in sorted(manifest['files'].items()):
    file = os.path.join(path, name)
    if not os.path.isfile(file):
      raise ValueError(f'{file} is missing (listed in {where}); the artifact is incomplete: export the run again.')
    if fileio.sha256_file(file) != digest:
      raise ValueError(f'{file} does not match its sha256 in {where} (damaged or replaced); export the run again.')
  return manifest


def _params(path: str, layout: list[dict]) -> list[np.ndarray]:
  """The parameter leaves from params.bin, in the exported functions' order."""
  with open(os.path.join(path, 'params.bin'), 'rb') as f:
    blob = f.read()
  leaves = []
  for leaf in layout:
    dtype = np.dtype(jax.numpy.dtype(leaf['dtype'])).newbyteorder('<')
    count = int(np.prod(leaf['shape'], dtype=np.int64))
    x = np.frombuffer(blob, dtype, count, leaf['offset']).reshape(leaf['shape'])
    leaves.append(x.astype(x.dtype.newbyteorder('=')))
  return leaves


def _deserialize(path: str, name: str, info: dict) -> jax_export.Exported:
  file = os.path.join(path, info['file'])
  version = info['calling_convention_version']
  low = jax_export.minimum_supported_calling_convention_version
  high = jax_export.maximum_supported_calling_convention_version
  if not low <= version <= high:
    raise ValueError(
      f'{file}: serialised with calling convention version {version}; the installed JAX {jax.__version__} reads '
      f'versions {low}-{high}. Export the run again with this JAX, or install a JAX that reads it.'
    )
  with open(file, 'rb') as f:
    data = f.read()
  try:
    return jax_export.deserialize(bytearray(data))
  except Exception as e:  # pylint: disable=broad-except  (one line naming the file)
    raise ValueError(f'{file}: cannot be read as a jax.export function {name!r}: {type(e).__name__}: {e}') from None


class Artifact:
  """An exported model: its frontend, target vocabulary, parameters and decoding functions."""

  def __init__(self, path: str):
    self.path = path
    self.manifest = m = read_manifest(path)
    if m['jax_version'] != jax.__version__:
      logging.warning(
        '%s was exported with JAX %s; this is JAX %s (it reads the serialisation; outputs may differ slightly).',
        path,
        m['jax_version'],
        jax.__version__,
      )
    self.frontend = frontend_lib.load(os.path.join(path, 'vocab.src.json'))
    self.tgt_vocab = vocab_lib.load(os.path.join(path, 'vocab.tgt.json'))
    spec = m['inputs']
    data = types.SimpleNamespace(max_src_len=spec['max_src_len'], reverse_source=spec['reverse_source'])
    self.inputs = inputs_lib.for_config(types.SimpleNamespace(data=data), self.frontend)
    self.functions = {name: _deserialize(path, name, info) for name, info in m['functions'].items()}
    # Every local device decodes its share of a batch, as inference.Decoder does (so outputs match it bit for bit).
    self._devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.asarray(self._devices), ('devices',))
    self._sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('devices'))
    n = len(self._devices)
    self.params = [
      jax.device_put(np.broadcast_to(x, (n,) + x.shape), self._sharding) for x in _params(path, m['params'])
    ]
    self._calls = {name: jax.pmap(exp.call, devices=self._devices) for name, exp in self.functions.items()}

  def hypotheses(self, function: str) -> int:
    """How many hypotheses (beam) or samples `function` returns per input."""
    return self.manifest['functions'][function]['hypotheses']

  def decode(
    self,
    examples: list[np.ndarray],
    keys: list[int],
    *,
    function: str = 'beam',
    batch_size: int | None = None,
    seed: int = 0,
  ) -> list[Hypotheses]:
    """Decodes encoded `examples` (`self.inputs.encode`) with the exported `function` ('beam', 'greedy' or
    'sample'); `keys` (inputs.line_key of each input line) seed each input's samples with `seed`."""
    if function not in self._calls:
      raise ValueError(f'{self.path} holds no {function!r} function; it holds {sorted(self._calls)}.')
    batch_size = batch_size or self.manifest['inputs']['batch_size']
    batch_size = -(-batch_size // len(self._devices)) * len(self._devices)  # a multiple of the device count
    src_len = self.inputs.max_len
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    out = [None] * len(examples)
    call, sample = self._calls[function], function == 'sample'
    for start in range(0, len(order), batch_size):
      rows = order[start : start + batch_size]
      batch = inputs_lib.collate([examples[i] for i in rows], batch_size, src_len)
      args = [batch['inputs'], batch['inputs_mask']]
      if sample:
        row_keys = np.zeros((batch_size,), np.uint32)  # the filler rows' keys do not matter
        row_keys[: len(rows)] = [keys[i] for i in rows]
        args.append(inputs_lib.row_rngs(seed, row_keys))
      shards = [jax.device_put(x.reshape((len(self._devices), -1) + x.shape[1:]), self._sharding) for x in args]
      seqs, scores = (x.reshape((batch_size,) + x.shape[2:]) for x in jax.device_get(call(self.params, *shards)))
      for j, i in enumerate(rows):
        out[i] = Hypotheses([self.tgt_vocab.decode(s) for s in seqs[j]], [float(x) for x in scores[j]])
    return out
