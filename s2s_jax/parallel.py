"""Data parallelism: the one module that knows the steps run under `jax.pmap` over the local devices.

Every other module places trees and runs steps through these functions: `data_parallel` (a step on every device,
collectives over `AXIS`), `replicate` / `unreplicate` (a tree on every device and back), `shard_batch` (a host
batch split by rows over the devices) and `CompiledByShape` (a step compiled once per batch shape). A replicated
tree carries a leading device axis here (seeds.SeedRuns.pick indexes after it).

A move to `jax.jit` with shardings (nanodo's train.py: a `Mesh` over the devices with a 'batch' axis, trees
replicated by `NamedSharding(mesh, P())`, batches split by `P('batch')`) changes this module alone: `data_parallel`
becomes `jax.jit` with those shardings, `replicate` a `jax.device_put` to the replicated sharding, `unreplicate`
the identity, `shard_batch` `jax.make_array_from_process_local_data`.
"""

import time

from absl import logging
import flax
from flax.training import common_utils
import jax
import numpy as np

AXIS = 'batch'  # the axis the steps' collectives reduce over (their axis_name)


def data_parallel(fn, *, in_axes=0, donate_argnums=()):
  """`fn` run on every local device with collectives over AXIS: an argument with in_axes 0 is a replicated tree or
  a sharded batch, one with None a host value given whole to every device; the outputs are replicated (or sharded
  like the batch). The result has `lower` (ahead-of-time compiling, see CompiledByShape)."""
  return jax.pmap(fn, axis_name=AXIS, in_axes=in_axes, donate_argnums=donate_argnums)


def replicate(tree):
  """A host (or single-device) tree on every local device."""
  return flax.jax_utils.replicate(tree)


def unreplicate(tree):
  """One device's copy of a replicated tree (never `x[0]`: the shard_map-based pmap changed it, flax 5d90851)."""
  return flax.jax_utils.unreplicate(tree)


def shard_batch(batch):
  """A host batch [B, ...] (a dict, or any tree of arrays) as [local devices, B / local devices, ...], committed to
  the devices.

  Passing numpy arrays straight to a pmapped step together with its own outputs makes every call take the slow
  dispatch path (measured 3-4x slower per step on CPU), so batches are put on the devices first.
  """
  devices = np.asarray(jax.local_devices())
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, (AXIS,)), jax.sharding.PartitionSpec(AXIS))
  return jax.device_put(common_utils.shard(batch), sharding)


class CompiledByShape:
  """A data-parallel step, compiled ahead of time (and timed) once per batch shape, when the first batch of that
  shape arrives: bucketed training batches come in several shapes, and compiling lazily keeps the first step early.
  Before a compile the steps still running are waited for, so `seconds` holds compiling (or loading from the
  persistent cache) only."""

  def __init__(self, p_fn, name: str = 'step'):
    self._p_fn, self._name, self._compiled = p_fn, name, {}
    self.seconds = 0.0  # total compile time so far

  def __call__(self, state, batch, *args):
    key = tuple((k, v.shape) for k, v in sorted(batch.items()))
    if key in self._compiled:
      return self._compiled[key](state, batch, *args)
    # The steps dispatched before run on while this one compiles: wait for them first, so the seconds measured
    # (and subtracted from training time: train/steps_per_s) are the compile's alone.
    jax.block_until_ready(state)
    start, out = time.perf_counter(), None
    if jax.process_count() == 1:
      self._compiled[key] = self._p_fn.lower(state, batch, *args).compile()
    else:
      # With several processes a pmap lowers for the global device count but is called with the local shards, so
      # its AOT executable cannot be called; the pmap's own cache compiles instead, timed with its first step.
      self._compiled[key] = self._p_fn
      out = jax.block_until_ready(self._p_fn(state, batch, *args))
    seconds = time.perf_counter() - start
    self.seconds += seconds
    logging.info(
      'Compiled the %s for batch shape %s in %.1f s (%d shapes, %.1f s so far).',
      self._name,
      ', '.join(f'{k} {list(shape)}' for k, shape in key),
      seconds,
      len(self._compiled),
      self.seconds,
    )
    return self._compiled[key](state, batch, *args) if out is None else out
