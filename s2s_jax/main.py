"""Trains, evaluates and tests one experiment.

  python -m s2s_jax.main --config=experiments/default.py --workdir=/tmp/s2s_default
  python -m s2s_jax.main --config=experiments/default.py:size=tiny --workdir=DIR --config.optim.learning_rate=3e-3

Exit codes: 0 done or stopped by a signal (run again to continue); 1 an error, also a workdir held by another
live run (see --lock_wait_s) or one that cannot be resumed; 75 (workdir_lock.EXIT_LOCK_LOST) the run lost its workdir
lock: another process took it over or the file was removed (the run stopped without writing anything more), or it
could not be refreshed for half its expiry (the run stopped as if preempted, with a checkpoint).

Multi-host: every process runs the same command, with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I, or under srun / on a TPU pod / with mpirun, where JAX finds the cluster itself. Each process reads
every process_count-th row of each global batch; the pmapped step spans all devices of all processes.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from s2s_jax import compile_cache
from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import train
from s2s_jax import workdir as workdir_lib
from s2s_jax import workdir_lock

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for config, checkpoints, metrics and evaluations.')
_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Experiment file, e.g. experiments/default.py:size=tiny.', lock_config=True
)
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
  'allow_config_change', False, 'Resume even if the config differs from the one in the workdir.'
)
_LOCK_WAIT_S = flags.DEFINE_float(
  'lock_wait_s',
  0.0,
  'A workdir held by a run of another host, container or boot: wait up to this many seconds for its lock to expire '
  '(its heartbeat counter standing still for 10 minutes), then take it over. 0: refuse at once, naming the holder.',
  lower_bound=0.0,
)
_INIT_FROM = flags.DEFINE_string(
  'init_from',
  None,
  "WORKDIR[:checkpoint]: start a new run from that run's parameters (config init.from_workdir / init.checkpoint; "
  'checkpoint: best, latest, a step or avg:K, default best). Ignored when the workdir already has a checkpoint.',
)
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'Multi-host: address of process 0 (host:port).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: index of this process.')
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir', compile_cache.default_dir(), compile_cache.FLAG_HELP
)
flags.mark_flags_as_required(['workdir', 'config'])


def _quiet_libraries() -> None:
  """Keeps INFO lines of orbax, TFDS and grain (dozens per checkpoint) out of the terminal; warnings stay."""
  noisy = ('/orbax/', '/tensorflow_datasets/', '/grain/', '/absl/logging')
  logging.get_absl_handler().addFilter(
    lambda r: r.levelno >= logging.converter.STANDARD_WARNING or not any(n in r.pathname for n in noisy)
  )


def _launched_as_many_processes() -> bool:
  """Whether the environment says this is one of several processes of a job (srun, a TPU pod slice, mpirun)."""
  env = os.environ
  return (
    int(env.get('SLURM_NTASKS', '1')) > 1
    or ',' in env.get('TPU_WORKER_HOSTNAMES', '')
    or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
    or 'JAX_COORDINATOR_ADDRESS' in env
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _quiet_libraries()
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _launched_as_many_processes():
    jax.distributed.initialize()  # JAX detects the cluster (SLURM, TPU pods, Open MPI, JAX_COORDINATOR_ADDRESS)
  compile_cache.enable(_COMPILATION_CACHE_DIR.value)
  logging.info('Process %d of %d; local devices: %s', jax.process_index(), jax.process_count(), jax.local_devices())
  try:
    config_checks.check_steps_override(_CONFIG.value, config_flags.get_override_values(flags.FLAGS['config']))
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _INIT_FROM.value:
    _CONFIG.value.init.from_workdir, _CONFIG.value.init.checkpoint = config_lib.parse_init_from(_INIT_FROM.value)
  try:
    train.train_and_evaluate(
      _CONFIG.value, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value, lock_wait_s=_LOCK_WAIT_S.value
    )
  except (workdir_lock.WorkdirBusyError, workdir_lib.NotResumableError) as e:
    logging.error('%s', e)
    sys.exit(1)
  except workdir_lock.LockLost as e:
    logging.error('%s', e)
    if e.abandon:  # exit at once: no buffered metric, no checkpoint still being written reaches the workdir
      logging.flush()
      sys.stderr.flush()
      os._exit(workdir_lock.EXIT_LOCK_LOST)  # pylint: disable=protected-access
    sys.exit(workdir_lock.EXIT_LOCK_LOST)


if __name__ == '__main__':
  config_checks.check_override_flags(sys.argv)
  app.run(main)
