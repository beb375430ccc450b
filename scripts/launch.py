"""What scripts/sweep.py and scripts/tune.py share: where runs execute (submitit: local processes or SLURM) and the
job that runs one command with its output appended to a log. Defines the flags --root, --executor, --parallel,
--partition, --time and --gpus."""

import os
import subprocess
import sys

from absl import flags
import cloudpickle
import submitit

# The submitted job (run_one) is pickled by value: this file is not an installed module, so a submitit worker could
# not import it by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROOT = flags.DEFINE_string('root', None, 'One run directory per point (or trial) goes here.')
EXECUTOR = flags.DEFINE_enum('executor', 'local', ['local', 'slurm'], 'Where runs execute.')
PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at the same time (local executor).')
PARTITION = flags.DEFINE_string('partition', None, 'SLURM partition.')
TIME = flags.DEFINE_integer('time', 240, 'SLURM time limit per run, minutes.')
GPUS = flags.DEFINE_integer('gpus', 1, 'SLURM GPUs per run.')


def run_one(cmd: list[str], log_path: str) -> int:
  """The job: one command (a training or evaluation run) as a subprocess, its output appended to log_path."""
  with open(log_path, 'a', encoding='utf-8') as log:
    return subprocess.run(cmd, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, check=False).returncode


def executor(root: str) -> submitit.Executor:
  out = submitit.AutoExecutor(folder=os.path.join(root, '.submitit'), cluster=EXECUTOR.value)
  if EXECUTOR.value == 'slurm':
    out.update_parameters(
      slurm_partition=PARTITION.value, timeout_min=TIME.value, gpus_per_node=GPUS.value, slurm_signal_delay_s=120
    )
  else:
    out.update_parameters(timeout_min=TIME.value)
  return out
