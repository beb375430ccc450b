"""What this process may use of the machine, as the scheduler or container granted it (not the whole host).

Data workers and other pools size themselves from `usable_cpus()`, never from `os.cpu_count()` alone: under
`srun --cpus-per-task=1` (a SLURM cluster whose task plugin pins no CPUs leaves the affinity mask wide open), in a
`taskset` or a container with a CPU quota, one worker per host core would oversubscribe the grant.
"""

import math
import os


def _affinity() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # not on Linux
    return os.cpu_count() or 1


def _slurm() -> int | None:
  """SLURM_CPUS_PER_TASK inside a SLURM job step or batch script (None outside one)."""
  value = os.environ.get('SLURM_CPUS_PER_TASK', '')
  return int(value) if value.isdigit() and int(value) > 0 else None


def _cgroup_quota(path: str = '/sys/fs/cgroup/cpu.max') -> int | None:
  """The cgroup v2 CPU quota in whole CPUs, rounded up ('max': none)."""
  try:
    with open(path, encoding='ascii') as f:
      quota, period = f.read().split()[:2]
  except (OSError, ValueError):
    return None
  if quota == 'max':
    return None
  return max(1, math.ceil(int(quota) / int(period)))


def usable_cpus() -> int:
  """The CPUs this process may use: its affinity mask, capped by SLURM_CPUS_PER_TASK and a cgroup CPU quota."""
  limits = [n for n in (_affinity(), _slurm(), _cgroup_quota()) if n]
  return max(1, min(limits))


def describe() -> dict[str, int | None]:
  """Each limit and the result (recorded in provenance.json)."""
  return {
    'host_cpus': os.cpu_count(),
    'affinity': _affinity(),
    'slurm_cpus_per_task': _slurm(),
    'cgroup_quota': _cgroup_quota(),
    'usable': usable_cpus(),
  }


def dot_peak_gflops(n: int = 1024, repeats: int = 3) -> float:
  """The day's `jnp.dot` speed of the default device, in GFLOP/s: the best of `repeats` float32 n x n matmuls after
  one warm-up (about 0.1 s here). Machines differ and drift (this project has read 103-468 GFLOP/s on one 2-core
  machine type), so every run records it at each start and a result carries the conditions it was measured in."""
  import time  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  # n = 1024 reads the same peak as 2048 here (182-184 vs 172-181 GFLOP/s) at a sixth of the cost per start; the
  # operand comes from numpy so that no random-number program is compiled for it.
  x = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  dot = jax.jit(jnp.dot)
  dot(x, x).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    dot(x, x).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return round(2 * n**3 / best / 1e9, 1)
