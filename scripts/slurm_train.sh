#!/usr/bin/env bash
# One training run as a SLURM batch job that survives preemption, time limits and requeues (docs/cluster.md).
#
#   sbatch [--partition=P --gpus=1 --time=4:00:00 --ntasks=N ...] scripts/slurm_train.sh \
#       --config=experiments/default.py --workdir=$SCRATCH/run [--config.a.b=v ...]
#
# Submit it from the repository, in the virtual environment the run should use (sbatch passes the environment on;
# $PYTHON, default `python`, is the interpreter). srun starts `python -m s2s_jax.main ARGS` in every task of the job
# (--ntasks=N: a multi-process run; JAX finds the other tasks through SLURM's environment).
#
# The job is requeueable and asks for SIGTERM 120 s before its time limit. Each start of it resumes the run from
# its workdir (main takes over the workdir lock an earlier start of the same job left, on any node). When the run
# stopped on a signal that left the job running (the time-limit warning, `scancel --signal=TERM JOBID`, a
# preemption's grace time), it has written a checkpoint and exited 0 without DONE: the job then requeues itself.
# `scontrol requeue JOBID` and a preemption in REQUEUE mode requeue it from outside. A finished run (DONE) or an
# error (exit status != 0) ends the job; `scancel JOBID` ends it too (the run checkpoints within SLURM's KillWait).
#SBATCH --job-name=s2s_jax
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -u

workdir= previous=
for arg in "$@"; do
  case $arg in
    --workdir=*) workdir=${arg#--workdir=} ;;
    *) [[ $previous == --workdir ]] && workdir=$arg ;;
  esac
  previous=$arg
done
if [[ -z $workdir ]]; then
  echo 'slurm_train.sh: give the run its folder: --workdir=DIR (and --config=FILE), as python -m s2s_jax.main takes them.' >&2
  exit 2
fi

note() { echo "[slurm_train $(date '+%F %T')] SLURM job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): $*"; }

note "starting on $(hostname): ${PYTHON:-python} -m s2s_jax.main $*"
srun "${PYTHON:-python}" -m s2s_jax.main "$@"
code=$?
if [[ $code -eq 0 && ! -e $workdir/DONE ]]; then
  note 'the run stopped with a checkpoint before its end (a stop signal): requeueing the job; its next start resumes it.'
  scontrol requeue "$SLURM_JOB_ID" || { note 'scontrol requeue failed: submit the same command again to resume.'; exit 1; }
elif [[ $code -ne 0 ]]; then
  note "the run failed (exit status $code): not requeued."
else
  note "the run is done ($workdir/DONE)."
fi
exit $code
