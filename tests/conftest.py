"""Test-session setup. Runs before any test module, so before JAX is imported.

Eight forced host devices let the pmap paths run on a CPU-only machine; setting them here (and never per
module) is the only way that works under pytest-xdist, where JAX is already initialised when a module loads.
"""

import atexit
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

# Tests compile hundreds of tiny programs and run each for a few steps: XLA's backend optimisations (LLVM -O2) cost
# more compile time than they save (measured: models_test + decode_test 235 s -> 148 s on 2 cores). Subprocesses
# that set their own XLA_FLAGS add S2S_TEST_XLA_FLAGS. Unset it (S2S_TEST_XLA_FLAGS=) to test at the default level.
os.environ.setdefault('S2S_TEST_XLA_FLAGS', '--xla_backend_optimization_level=0')
os.environ['XLA_FLAGS'] = ' '.join(
  [os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=8', os.environ['S2S_TEST_XLA_FLAGS']]
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# A persistent compilation cache shared by the xdist workers of one session cuts repeated compiles. It is made
# fresh by the first process of the session (the xdist controller; workers inherit its environment) and removed at
# its exit: a fixed path shared by every session on the machine, including concurrent ones, once served an entry
# that crashed the deserialiser (a segfault in compilation_cache.get_executable_and_time).
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='s2s_jax_test_jit_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')  # the tiny models compile in < 1 s

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_numpy_rank_promotion', 'raise')

# absltest.TestCase.create_tempdir reads absl flags; under pytest nobody parses them.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()

try:
  from hypothesis import settings  # pylint: disable=g-import-not-at-top

  settings.register_profile('s2s', max_examples=25, deadline=None)
  settings.load_profile('s2s')
except ImportError:  # hypothesis is a test extra
  pass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
  """Tests marked `cluster` run only in their own tier (`-m cluster`): the README's test command and the slow tier
  never collect them."""
  if 'cluster' in (config.getoption('markexpr') or ''):
    return
  kept = [item for item in items if not item.get_closest_marker('cluster')]
  if len(kept) < len(items):
    config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker('cluster')])
    items[:] = kept


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_local_cluster() -> dict[str, str]:
  """Starts (or finds running) the local SLURM cluster and PostgreSQL server; their `export` lines as a dict."""
  with open(os.path.join(tempfile.gettempdir(), 's2s_jax_local_cluster.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # one start at a time (xdist workers)
    done = subprocess.run(
      [os.path.join(_REPO, 'scripts', 'local_cluster.sh'), 'start'], capture_output=True, text=True, check=False
    )
  if done.returncode:
    raise RuntimeError(f'scripts/local_cluster.sh start failed ({done.returncode}):\n{done.stderr[-3000:]}')
  return dict(line[len('export ') :].split('=', 1) for line in done.stdout.splitlines() if line.startswith('export '))


@pytest.fixture(scope='session')
def local_cluster() -> dict[str, str]:
  """The environment of the running local cluster (S2S_CLUSTER_PG_URL, SLURM_CONF); started by this fixture when
  needed. Without it the test skips with the reason, or fails where S2S_REQUIRE_CLUSTER=1 (CI)."""
  try:
    return _start_local_cluster()
  except (RuntimeError, OSError) as e:
    if os.environ.get('S2S_REQUIRE_CLUSTER') == '1':
      pytest.fail(f'S2S_REQUIRE_CLUSTER=1, but the local cluster cannot start: {e}')
    pytest.skip(f'the local SLURM cluster and PostgreSQL cannot start here (run as root with Debian packages): {e}')
