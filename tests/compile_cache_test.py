"""The persistent compilation cache of real runs (s2s_jax/compile_cache.py) and honest training rates."""

import glob
import json
import os

from absl.testing import absltest
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import testutil

from s2s_jax import compile_cache
from s2s_jax import parallel

# A program compiled and run in a fresh process: its output, then the process' compile statistics as JSON.
_PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from s2s_jax import compile_cache
compile_cache.enable(sys.argv[1])
f = jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.0)
print(float(f(jnp.arange(12.0).reshape(3, 4) / 10).sum()))
print(json.dumps(compile_cache.stats()))
"""


class SafeCacheTest(absltest.TestCase):
  def test_an_entry_comes_back_whole_and_a_damaged_one_is_a_miss_and_removed(self):
    folder = self.create_tempdir().full_path
    cache = compile_cache.SafeCache(folder, max_bytes=1 << 20)
    value = os.urandom(5000)
    cache.put('k1', value)
    self.assertEqual(cache.get('k1'), value)
    self.assertIsNone(cache.get('k2'))
    (path,) = glob.glob(os.path.join(folder, '*.xla'))
    self.assertIn(compile_cache.host_salt(), os.path.basename(path))  # the CPU's features are part of the name
    self.assertEqual(sorted(os.listdir(folder)), sorted(['.evict.lock', os.path.basename(path)]))  # no temp file left
    for damage in ('truncate', 'flip', 'empty'):
      cache.put('k1', value)
      with open(path, 'r+b') as f:
        if damage == 'truncate':
          f.truncate(os.path.getsize(path) // 2)
        elif damage == 'flip':
          f.seek(len(compile_cache._MAGIC) + 32 + 100)  # pylint: disable=protected-access
          f.write(bytes([f.read(1)[0] ^ 0xFF]))
        else:
          f.truncate(0)
      with self.assertLogs(level='WARNING') as logs:
        self.assertIsNone(cache.get('k1'), damage)
      self.assertIn('is damaged', logs.output[0])
      self.assertFalse(os.path.exists(path), damage)  # removed: the next compile writes it again
    self.assertEqual(cache.damaged, 3)

  def test_the_size_cap_evicts_the_least_recently_used(self):
    cache = compile_cache.SafeCache(self.create_tempdir().full_path, max_bytes=3 * 1100)
    for k, key in enumerate(('a', 'b', 'c')):
      cache.put(key, bytes(1000))
      os.utime(cache._file(key), (1000 + k, 1000 + k))  # pylint: disable=protected-access
    self.assertIsNotNone(cache.get('a'))  # a is now the most recently used
    cache.put('d', bytes(1000))
    self.assertIsNone(cache.get('b'))
    for key in ('a', 'c', 'd'):
      self.assertIsNotNone(cache.get(key), key)

  def test_default_folder(self):
    env = {k: os.environ.get(k) for k in ('JAX_COMPILATION_CACHE_DIR', 'XDG_CACHE_HOME')}
    try:
      os.environ.pop('JAX_COMPILATION_CACHE_DIR', None)
      os.environ['XDG_CACHE_HOME'] = '/x/cache'
      self.assertEqual(compile_cache.default_dir(), '/x/cache/s2s_jax/jit')
      os.environ.pop('XDG_CACHE_HOME')
      self.assertEqual(compile_cache.default_dir(), os.path.expanduser('~/.cache/s2s_jax/jit'))
      os.environ['JAX_COMPILATION_CACHE_DIR'] = '/y'
      self.assertEqual(compile_cache.default_dir(), '/y')
    finally:
      for k, v in env.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v


class _RecordsReadiness:
  """A pmapped function whose `lower` records whether the state it is given has been computed."""

  def __init__(self, p_fn):
    self.p_fn, self.ready_at_lower = p_fn, []

  def lower(self, state, batch, *args):
    self.ready_at_lower.append(all(x.is_ready() for x in jax.tree.leaves(state)))
    return self.p_fn.lower(state, batch, *args)


class HonestRateTest(absltest.TestCase):
  def test_a_new_shape_compiles_after_the_steps_before_it_finished(self):
    """The compile's seconds are subtracted from a logging window's time (train/steps_per_s): steps still running
    while it compiled would be counted as compile time, and the rate overstated."""

    def slow_step(state, batch):
      x = state['x']
      for _ in range(30):  # a few hundred ms of matmuls: still running when the next batch's shape arrives
        x = jnp.tanh(x @ x) * 0.5
      return {'x': x + batch['inputs'].sum() * 0}

    wrapped = _RecordsReadiness(jax.pmap(slow_step, axis_name='batch'))
    p_step = parallel.CompiledByShape(wrapped, 'slow step')
    state = flax.jax_utils.replicate({'x': jnp.eye(128) * 0.9})
    state = p_step(state, parallel.shard_batch({'inputs': np.ones((8, 3), np.int32)}))
    state = p_step(state, parallel.shard_batch({'inputs': np.ones((8, 3), np.int32)}))
    state = p_step(state, parallel.shard_batch({'inputs': np.ones((8, 5), np.int32)}))  # a new shape
    jax.block_until_ready(state)
    self.assertEqual(wrapped.ready_at_lower, [True, True])


@pytest.mark.slow  # fresh processes (each imports JAX and compiles)
class CorruptedCacheTest(absltest.TestCase):
  def _run(self, folder):
    done = testutil.run('-c', _PROGRAM, folder, timeout=300)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    lines = done.stdout.strip().splitlines()
    return float(lines[-2]), json.loads(lines[-1]), done.stderr

  def test_damaged_entries_are_recompiled_with_a_warning_never_a_crash(self):
    folder = self.create_tempdir().full_path
    value, first, _ = self._run(folder)
    self.assertGreater(first['compiled'], 0)
    self.assertEqual(first['from_cache'], 0)
    again, second, _ = self._run(folder)
    self.assertEqual((again, second['from_cache'], second['compiled']), (value, second['programs'], 0))
    entries = sorted(glob.glob(os.path.join(folder, '*.xla')))
    self.assertLen(entries, first['programs'])
    rng = np.random.default_rng(0)
    for k, path in enumerate(entries):  # truncate some, flip bytes in the others
      with open(path, 'r+b') as f:
        if k % 2:
          f.truncate(rng.integers(1, os.path.getsize(path)))
        else:
          for pos in rng.integers(0, os.path.getsize(path), 8):
            f.seek(pos)
            byte = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([byte ^ 0x5A]))
    third_value, third, stderr = self._run(folder)
    self.assertEqual(third_value, value)
    self.assertEqual((third['from_cache'], third['damaged_entries']), (0, len(entries)))
    self.assertIn('is damaged', stderr)
    fourth_value, fourth, _ = self._run(folder)  # rewritten whole by the third run
    self.assertEqual((fourth_value, fourth['from_cache'], fourth['damaged_entries']), (value, fourth['programs'], 0))

  def test_an_empty_folder_turns_it_off(self):
    _, stats, _ = self._run('')
    self.assertIsNone(stats['cache_dir'])
    self.assertEqual(stats['from_cache'], 0)


def _provenance_compiles(workdir: str) -> dict:
  with open(os.path.join(workdir, 'provenance.json')) as f:
    return json.load(f)['starts'][-1]['compiles']


@pytest.mark.slow  # two short training runs in fresh processes
class RunsShareTheCacheTest(absltest.TestCase):
  def test_a_run_with_other_hyperparameters_and_seed_loads_every_program_from_the_cache(self):
    root, cache = self.create_tempdir().full_path, self.create_tempdir().full_path
    common = [
      '--config=experiments/default.py:size=tiny',
      f'--config.data.data_dir={os.path.join(root, "data")}',
      '--config.num_train_steps=4',
      '--config.log_every_steps=2',
      '--config.eval_every_steps=4',
      '--config.checkpoint_every_steps=4',
      f'--compilation_cache_dir={cache}',
    ]
    runs = (
      ('first', ['--config.model.dropout_rate=0.1']),
      ('second', ['--config.model.dropout_rate=0.2', '--config.optim.learning_rate=2e-3', '--config.seed=1']),
    )
    for name, extra in runs:
      done = testutil.run('-m', 's2s_jax.main', f'--workdir={os.path.join(root, name)}', *common, *extra)
      self.assertEqual(done.returncode, 0, done.stderr[-3000:])
      self.assertIn('Compiles of this start:', done.stderr)
    first, second = (_provenance_compiles(os.path.join(root, name)) for name in ('first', 'second'))
    self.assertEqual(first['cache_dir'], cache)
    self.assertGreater(first['compiled'], 0)
    self.assertGreater(first['compile_s'], 0)
    self.assertEqual((second['compiled'], second['from_cache']), (0, second['programs']), second)


if __name__ == '__main__':
  absltest.main()
