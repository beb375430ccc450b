"""What produced a run: provenance.json's record (commit, packages, devices, data and tokenizer hashes) and the
histories it keeps across resumes: every start of the run and every dataset it trained on.
"""

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from absl import logging
import jax

from s2s_jax import fileio
from s2s_jax import resources
from s2s_jax import slurm

_PACKAGES = (
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax-checkpoint',
  'tensorflow-datasets',
  'grain',
  'numpy',
  'ml-collections',
  'absl-py',
  'sacrebleu',
  'tensorboardX',
)
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str:
  try:
    return subprocess.run(
      ['git', '-C', _REPO, *args], capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return ''


def git_sha() -> str:
  """The repository's HEAD commit ('' outside a git checkout)."""
  return _git('rev-parse', 'HEAD')


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


def record(
  data, data_history: list[dict[str, Any]] | None = None, starts: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
  """What produced a run. The data's identity (`data_identity`, identity.data_identity: dataset, builder config and
  version, each split's raw files in order, features, direction) and its fingerprint (`data_sha256`, the sha256 of
  that identity; the raw files' sha256 come from the manifest made when the dataset was prepared, `data_manifest`:
  each raw file's size, time and sha256); `data_history` lists the fingerprints a run trained on, with the step
  each began at; `starts` lists every start of the run (the
  first, then each resume) with the step it began at, its UTC time and commit, so a result says how often its
  run was stopped and by which code each part was trained (the top-level git_sha is the latest start's)."""
  git_sha, git_dirty = _git('rev-parse', 'HEAD'), bool(_git('status', '--porcelain'))
  return {
    'git_sha': git_sha,
    'git_dirty': git_dirty,
    'starts': starts or [_start_record(0, git_sha, git_dirty)],
    'packages': _versions(),
    'devices': [str(d) for d in jax.devices()],
    'process_count': jax.process_count(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'cpu': _cpu(),
    'cpu_count': os.cpu_count(),
    'cpus': resources.describe(),  # what this process was granted (affinity, SLURM, cgroup quota)
    'command_line': sys.argv,
    'data_sha256': data.fingerprint,
    'data_identity': data.identity,
    'data_manifest': data.manifest,
    'data_history': data_history or [{'data_sha256': data.fingerprint, 'from_step': 0}],
    'tokenizer_sha256': {'source': data.frontend.sha256(), 'target': data.tgt_vocab.sha256()},
  }


def _start_record(step: int, git_sha: str | None = None, git_dirty: bool | None = None) -> dict[str, Any]:
  record = {
    'from_step': step,
    'utc': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    'git_sha': _git('rev-parse', 'HEAD') if git_sha is None else git_sha,
    'git_dirty': bool(_git('status', '--porcelain')) if git_dirty is None else git_dirty,
    'dot_peak_gflops': resources.dot_peak_gflops(),  # the day's machine speed (results carry their conditions)
  }
  if job := slurm.job():  # inside a SLURM job: which job, and which start of it (restart > 0: it was requeued)
    record['slurm'] = job
  return record


def starts(workdir: str, num_train_steps: int, done: bool) -> list[dict[str, Any]]:
  """The start history to record: the old one plus this start, unless the run is finished (then nothing runs).
  A provenance.json written before start histories begins its history with this start."""
  path = os.path.join(workdir, 'provenance.json')
  old = []
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = json.load(f).get('starts') or []
  step = _latest_step_on_disk(workdir)
  if old and done and step >= num_train_steps:
    return old
  return old + [_start_record(step)]


def record_compiles(workdir: str, stats: dict[str, Any]) -> None:
  """Adds this start's compile statistics (compile_cache.stats: programs, from_cache, compiled, compile_s, ...) to
  its entry of provenance.json's `starts` (the last one)."""
  path = os.path.join(workdir, 'provenance.json')
  with open(path, encoding='utf-8') as f:
    record_ = json.load(f)
  if record_.get('starts'):
    record_['starts'][-1]['compiles'] = stats
  fileio.write_json(path, record_, indent=2, sort_keys=True, ensure_ascii=False)


def _latest_step_on_disk(workdir: str) -> int:
  folder = os.path.join(workdir, 'checkpoints')
  steps = [int(d) for d in os.listdir(folder) if d.isdigit()] if os.path.isdir(folder) else []
  return max(steps, default=0)


def _identity_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
  """What differs between two data identities (identity.data_identity) besides the raw files' content, in words."""
  if not old or not new:
    return []
  parts = []
  before, after = (dict((split, [f[0] for f in files]) for split, files in i.get('splits', [])) for i in (old, new))
  for split in sorted(set(before) | set(after)):
    if split not in after:
      parts.append(f'split {split!r} removed')
    elif split not in before:
      parts.append(f'split {split!r} added')
    elif before[split] != after[split]:
      parts.append(f'split {split!r} read from {", ".join(after[split])} instead of {", ".join(before[split])}')
  for key in sorted((set(old) | set(new)) - {'splits', 'files'}):
    if old.get(key) != new.get(key):
      parts.append(f'{key} {str(old.get(key))[:80]} -> {str(new.get(key))[:80]}')
  return parts


def _data_changes(
  old: dict[str, Any] | None,
  new: dict[str, Any] | None,
  old_identity: dict[str, Any] | None = None,
  new_identity: dict[str, Any] | None = None,
) -> str:
  """The raw files that differ between two manifests, else what differs between two identities, in words."""
  identity = _identity_changes(old_identity, new_identity)
  if not old or not new:
    return '; '.join(identity) or 'the dataset was prepared from other data'
  before, after = ({f['path']: f for f in m['files']} for m in (old, new))
  changed = [p for p in sorted(set(before) & set(after)) if before[p]['sha256'] != after[p]['sha256']]
  parts = [
    f'{label}: {", ".join(paths[:5])}'
    for label, paths in (
      ('changed', changed),
      ('added', sorted(set(after) - set(before))),
      ('removed', sorted(set(before) - set(after))),
    )
    if paths
  ]
  # Changed raw files first: a parallel_text config name, for one, follows from them.
  return '; '.join(parts or identity) or f'{old["dataset"]}/{old["config"]} -> {new["dataset"]}/{new["config"]}'


def data_history(workdir: str, data, allow_change: bool) -> list[dict[str, Any]] | None:
  """The data history to record; raises when the data changed since the run started (unless allowed).

  A provenance.json written before data identities (no `data_identity`: its data_sha256 is the older form,
  builders.legacy_fingerprint) is compared in that form: when today's data give the same value, the run resumes
  and its last history entry records the new fingerprint, keeping the old one as `legacy_data_sha256`."""
  path = os.path.join(workdir, 'provenance.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    old = json.load(f)
  history = old.get('data_history')
  if not isinstance(old.get('data_sha256'), str) or not history:
    return None  # written before data fingerprints: nothing to compare with
  if history[-1]['data_sha256'] == data.fingerprint:
    return history
  last = history[-1]
  if 'data_identity' not in old and data.legacy_fingerprint and last['data_sha256'] == data.legacy_fingerprint:
    logging.info('%s records the older form of data fingerprint, which the data still give; recording the new.', path)
    return history[:-1] + [{**last, 'data_sha256': data.fingerprint, 'legacy_data_sha256': last['data_sha256']}]
  changes = _data_changes(old.get('data_manifest'), data.manifest, old.get('data_identity'), data.identity)
  message = (
    f'The data changed since this run started ({changes}); '
    f'{path} records data_sha256 {history[-1]["data_sha256"][:12]}..., the data now gives '
    f'{data.fingerprint[:12]}....'
  )
  if not allow_change:
    raise ValueError(
      message + ' Restore the data, use another --workdir, or pass --allow_config_change to continue '
      'on the new data (the iterator position then indexes a new order of examples).'
    )
  step = _latest_step_on_disk(workdir)
  logging.warning(
    '%s\n(--allow_config_change given: continuing from step %d; provenance.json keeps the history.)', message, step
  )
  return history + [{'data_sha256': data.fingerprint, 'from_step': step}]
