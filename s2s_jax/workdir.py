"""The workdir contract (CONVENTIONS §5): config.json, provenance.json, data_report.json, DONE.

A run whose config differs from the one already in its workdir (beyond the fields config_lib.RESUMABLE allows)
refuses with a diff unless allow_config_change is set.
"""
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

from absl import logging
import jax
import ml_collections

from s2s_jax import config_lib

_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets', 'grain', 'numpy',
             'ml-collections', 'absl-py', 'sacrebleu', 'tensorboardX')
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A validated, unlocked copy with absolute data paths."""
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config_lib.validate(config)
  config = ml_collections.ConfigDict(config_lib.to_dict(config))
  config_lib.validate(config)  # the JSON round trip must not change types
  pipeline.resolve_paths(config.data)
  return config


def set_data_fields(config: ml_collections.ConfigDict, data) -> None:
  """Model fields that come from the data: vocabulary sizes, the input kind and the padded source length."""
  from s2s_jax.data import inputs as inputs_lib  # pylint: disable=g-import-not-at-top
  fields = inputs_lib.source_fields(data.src_vocab)
  kind = fields['input_kind']
  src_size = len(data.src_vocab) if kind == 'tokens' else 0
  for key, value in (('src_vocab_size', src_size), ('tgt_vocab_size', len(data.tgt_vocab)),
                     ('input_features', fields['input_features'])):
    if config.model[key] not in (0, value):
      raise ValueError(f'model.{key}={config.model[key]} but the data gives {value}; leave it 0 (set from data).')
    config.model[key] = value
  if config.model.input_kind not in ('tokens', kind):
    raise ValueError(f'model.input_kind={config.model.input_kind!r} but the data gives {kind!r}; leave it tokens '
                     '(set from data).')
  config.model.input_kind = kind
  config.model.image_channels = fields['image_channels']
  config.model.max_src_len = config.model.max_src_len or config.data.max_src_len


def _write_json(path: str, obj: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
  os.replace(tmp, path)


def check_and_write(workdir: str, config: ml_collections.ConfigDict, data, allow_config_change: bool) -> None:
  """Compares with an existing config.json, then writes config.json, provenance.json and data_report.json."""
  path = os.path.join(workdir, 'config.json')
  new = config_lib.to_dict(config)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = json.load(f)
    if changes := config_lib.diff(old, new):
      message = f'The config differs from {path}:\n  ' + '\n  '.join(changes)
      if not allow_config_change:
        raise ValueError(message + '\nUse another --workdir, or pass --allow_config_change to resume anyway.')
      logging.warning('%s\n(--allow_config_change given: continuing.)', message)
  if jax.process_index() != 0:
    return
  _write_json(path, new)
  _write_json(os.path.join(workdir, 'data_report.json'), data.report)
  _write_json(os.path.join(workdir, 'provenance.json'), provenance(data))


def _git(*args: str) -> str:
  try:
    return subprocess.run(['git', '-C', _REPO, *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ''


def _cpu() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
  out = {'python': platform.python_version()}
  for name in _PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def provenance(data) -> dict[str, Any]:
  split_hashes = {}
  for name, split in data.splits.items():
    h = hashlib.sha256()
    for s, t in zip(split.sources, split.targets):
      h.update(s.encode('utf-8') + b'\t' + t.encode('utf-8') + b'\n')
    split_hashes[name] = h.hexdigest()
  return {
      'git_sha': _git('rev-parse', 'HEAD'), 'git_dirty': bool(_git('status', '--porcelain')),
      'packages': _versions(), 'devices': [str(d) for d in jax.devices()], 'process_count': jax.process_count(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'cpu': _cpu(), 'cpu_count': os.cpu_count(),
      'command_line': sys.argv, 'data_sha256': split_hashes,
      'tokenizer_sha256': {'source': data.src_vocab.sha256(), 'target': data.tgt_vocab.sha256()},
  }


def is_done(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'DONE'))


def clear_done(workdir: str) -> None:
  if is_done(workdir) and jax.process_index() == 0:
    os.remove(os.path.join(workdir, 'DONE'))


def mark_done(workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'DONE'), 'w', encoding='utf-8') as f:
      f.write('done\n')
