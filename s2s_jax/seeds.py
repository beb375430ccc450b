"""Several seeds of one configuration trained as one vmapped program (`config.num_seeds`).

With num_seeds = 1 the run is the workdir itself. With N > 1 the parameters, optimizer state and dropout RNGs
carry a leading seed axis (initialisations and dropout from seeds seed .. seed+N-1) and every step is vmapped over
it, on the same batches (their order follows `seed`, the first seed); the workdir holds the shared checkpoints,
and `workdir/seed_<s>/` is a complete workdir per seed (config.json with that seed, vocabularies, metrics.jsonl,
tensorboard/, best/, eval_test.json, DONE) that translate, evaluate and report use like any other run.
"""

import os
import shutil

import jax
import numpy as np

from s2s_jax import checkpointing
from s2s_jax import config_lib
from s2s_jax import fileio
from s2s_jax import steps
from s2s_jax import writers


class SeedRuns:
  """The per-seed outputs of a training run: directories, metric writers and best-checkpoint managers."""

  def __init__(self, config, workdir: str, start_time: float, resume_step: int, guard=None):
    """`guard`: called before every metrics write (workdir_lock.WorkdirLock.check: a run that lost its lock writes
    nothing more)."""
    self.num = config.num_seeds
    self.seeds = [config.seed + k for k in range(self.num)]
    self.dirs = run_dirs(config, workdir)
    if self.num > 1 and jax.process_index() == 0:
      for seed, folder in zip(self.seeds, self.dirs):
        _write_seed_workdir(config, workdir, folder, seed)
    self.writers = [writers.MetricWriter(d, start_time, resume_step=resume_step, guard=guard) for d in self.dirs]
    self.best = [checkpointing.make_best_manager(d, f'eval/{config.eval.metric}', config.eval.mode) for d in self.dirs]

  def pick(self, tree, k: int, replicated: bool = True):
    """Seed k's slice of a tree with a seed axis (after the device axis when replicated)."""
    if self.num == 1:
      return tree
    return jax.tree.map(lambda x: x[:, k] if replicated else x[k], tree)

  def close(self) -> None:
    for writer, mngr in zip(self.writers, self.best):
      mngr.wait_until_finished()
      mngr.close()
      writer.close()


def run_dirs(config, workdir: str) -> list[str]:
  """The workdir of each seed: the workdir itself, or workdir/seed_<s>/ with num_seeds > 1."""
  if config.num_seeds == 1:
    return [workdir]
  return [os.path.join(workdir, f'seed_{config.seed + k}') for k in range(config.num_seeds)]


def _write_seed_workdir(config, workdir: str, folder: str, seed: int) -> None:
  os.makedirs(folder, exist_ok=True)
  single = config_lib.to_dict(config)
  single.update(seed=seed, num_seeds=1)
  fileio.write_json(os.path.join(folder, 'config.json'), single, indent=2, sort_keys=True, ensure_ascii=False)
  for name in ('vocab.src.json', 'vocab.tgt.json', 'data_report.json', 'provenance.json'):
    if os.path.exists(os.path.join(workdir, name)):
      shutil.copyfile(os.path.join(workdir, name), os.path.join(folder, name))


def create_states(config, model, tx, src_len: int, tgt_len: int) -> steps.TrainState:
  """One train state, or num_seeds of them stacked on a leading seed axis."""
  states = [
    steps.create_train_state(jax.random.PRNGKey(config.seed + k), model, tx, src_len, tgt_len)
    for k in range(config.num_seeds)
  ]
  if len(states) == 1:
    return states[0]
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)


def empty_log_sums(num_seeds: int):
  sums = steps.empty_log_sums()
  if num_seeds == 1:
    return sums
  return jax.tree.map(lambda x: np.stack([np.asarray(x)] * num_seeds), sums)
