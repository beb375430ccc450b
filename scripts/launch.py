"""What scripts/sweep.py and scripts/tune.py share: where runs execute (submitit: local processes or SLURM), the
root folder they work in, and the job that runs one command with its output appended to a log. Defines the flags
--root, --executor, --parallel, --partition, --time, --gpus, --cpus_per_task, --mem, --nodes, --tasks_per_node and
--stop_grace_s.

SLURM (--executor=slurm): every run is one `sbatch` job (named after the run, so `squeue` shows which), submitted
through submitit. The job runs the driver's Python (sys.executable: the same virtual environment) with the driver's
environment (sbatch --export=ALL) in the repository folder, asks for --cpus_per_task CPUs (default 1), --gpus GPUs
per node (default 0: none, which a CPU-only cluster requires) and, where given, --mem memory per node (default: the
cluster's). --nodes x --tasks_per_node > 1 makes a multi-process run: srun starts the job's tasks, each runs
`python -m s2s_jax.main` (task P's output goes to LOG.taskP.log, task 0's to the log itself), and JAX finds the
other processes through SLURM's environment. A run that fails makes its job fail (sacct: FAILED); the driver
reports it with the job id and the last lines of its log (failure_report).

Stopping (run_one): a stop signal that reaches the job (SIGINT from Ctrl-C or a cancelled local job, SIGTERM, SIGHUP,
SIGUSR1/SIGUSR2 from a scheduler's preemption or time-limit warning) is passed on to the run, which checkpoints and
exits; the job waits up to --stop_grace_s for it, then kills it. Its exit code says what happened (see run_one).

Preemption and requeue (run_job): a SLURM job (submitted with --requeue) whose run stopped on a stop signal starts
again and resumes the run from its checkpoint, under the same job id, while the driver keeps waiting for it: when
SLURM requeued the job itself (`scontrol requeue`, a preemption in REQUEUE mode) and when the job was still running
after the signal, which was then a warning (`scancel --signal=TERM`, submitit's time-limit warning, SIGUSR2 120 s
ahead; a preemption's grace time): the job then requeues itself (`scontrol requeue $SLURM_JOB_ID`). A job that
ends (`scancel`, the time limit reached) reports its run as stopped; run the driver again to resume it. The new
start takes over the workdir lock of the earlier one at once, on whichever node it runs (s2s_jax/workdir_lock.py).
"""

import glob
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags
import cloudpickle
import submitit

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import compile_cache
from s2s_jax import slurm

# pylint: enable=g-import-not-at-top,wrong-import-position

# The submitted job (run_one) is pickled by value: this file is not an installed module, so a submitit worker could
# not import it by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = flags.DEFINE_string('root', None, 'One run directory per point (or trial) goes here.')
EXECUTOR = flags.DEFINE_enum('executor', 'local', ['local', 'slurm'], 'Where runs execute.')
PARALLEL = flags.DEFINE_integer('parallel', 1, 'Runs at the same time (local executor).')
PARTITION = flags.DEFINE_string('partition', None, 'SLURM partition.')
TIME = flags.DEFINE_integer('time', 240, 'SLURM time limit per run, minutes.')
GPUS = flags.DEFINE_integer(
  'gpus', 0, 'SLURM GPUs per node of each run (0: none; a cluster without GPUs rejects any request).', lower_bound=0
)
CPUS_PER_TASK = flags.DEFINE_integer('cpus_per_task', 1, 'SLURM CPUs per task of each run.', lower_bound=1)
MEM = flags.DEFINE_string(
  'mem', None, 'SLURM memory per node of each run, as sbatch --mem takes it (e.g. 16G); unset: the cluster default.'
)
NODES = flags.DEFINE_integer('nodes', 1, 'SLURM nodes per run.', lower_bound=1)
TASKS_PER_NODE = flags.DEFINE_integer(
  'tasks_per_node',
  1,
  'SLURM tasks (processes) per node of each run; NODES x TASKS_PER_NODE > 1 makes a multi-process run (srun starts '
  'every task, JAX finds the others through the SLURM environment).',
  lower_bound=1,
)
flags.register_validator(
  'mem',
  lambda v: v is None or re.fullmatch(r'\d+[KMGT]?', v) is not None,
  '--mem takes sbatch --mem values: 16G, 500M.',
)
COMPILATION_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir',
  compile_cache.default_dir(),
  'Passed to every run (s2s_jax.main, s2s_jax.evaluate): runs of one model shape share its compiled programs. '
  + compile_cache.FLAG_HELP,
)
STOP_GRACE_S = flags.DEFINE_float(
  'stop_grace_s',
  600.0,
  'After a stop signal (Ctrl-C, a cancelled, pruned or preempted job) a run gets this many seconds to write its '
  'checkpoint and exit; then it is killed.',
  lower_bound=0.0,
)

# What the run is sent for each stop signal the job receives: the training stops cleanly on SIGINT and SIGTERM
# (s2s_jax/preemption.py); the others would kill it at once, so they become SIGTERM.
FORWARD = {
  signal.SIGINT: signal.SIGINT,
  signal.SIGTERM: signal.SIGTERM,
  signal.SIGHUP: signal.SIGTERM,
  signal.SIGUSR1: signal.SIGTERM,
  signal.SIGUSR2: signal.SIGTERM,
}
KILLED = 124  # the run did not stop within the grace after a stop signal and was killed (as timeout(1) reports)
REQUEUED_EXIT = 3  # a task of a SLURM job whose run stopped and whose job starts again; it leaves no result
_REPEAT_S = 1.0  # a signal this soon after the last one passed on is the same stop reaching the job twice


def stopped_code(signum: int) -> int:
  """run_one's exit code when the run stopped on its own after stop signal `signum`: 128 + signum, as a shell says."""
  return 128 + signum


def was_stopped(code) -> bool:
  """Whether a run_one exit code means the run was stopped (or killed) on a stop signal: it is resumable."""
  return code == KILLED or code in {stopped_code(s) for s in FORWARD}


def describe(code) -> str:
  """A job's result (run_one's exit code, or the job's error) in words."""
  if not isinstance(code, int):
    return f'FAILED ({code})'
  if code == KILLED:
    return f'killed: it did not stop within the grace after a stop signal (exit {KILLED})'
  if was_stopped(code):
    return f'stopped by {signal.Signals(code - 128).name} (exit {code}; run the same command to resume)'
  return 'done' if code == 0 else f'FAILED (exit {code})'


def cache_flag() -> str:
  """The --compilation_cache_dir of every run this driver starts (resolved here, so all its runs share one)."""
  value = COMPILATION_CACHE_DIR.value
  return f'--compilation_cache_dir={os.path.abspath(os.path.expanduser(value)) if value else ""}'


def run_one(cmd: list[str], log_path: str, grace_s: float = 600.0) -> int:
  """The job: one command (a training or evaluation run) as a subprocess, its output appended to log_path.

  A stop signal the job receives (FORWARD's keys) is passed on to the run, and the job waits up to `grace_s` seconds
  for the run to stop (a training run writes its checkpoint), then kills it. A repeat within a second is the same
  stop reaching the job twice (the terminal's Ctrl-C and submitit's controller) and is not passed on; a later one
  is (the training then exits at once). Outside SLURM the run has its own session, so it hears only what the job
  passes on; under SLURM the scheduler signals every process of the job itself, so only SIGHUP/SIGUSR1/SIGUSR2 are
  passed on (as SIGTERM; the run ignores SIGUSR1/2, so a scheduler's warning to every process spares it).

  Returns the run's exit code when no stop signal came (negative: killed by that signal); after one, the run's
  code if it failed, 128 + the signal's number if it stopped cleanly, KILLED (124) if it had to be killed.
  """
  own_session = os.environ.get('SUBMITIT_EXECUTOR') != 'slurm'
  received = []  # (signal, monotonic time, passed on) of every stop signal
  child, previous, pending = None, {}, []

  def on_signal(signum, frame) -> None:
    del frame
    if child is None:  # a stop while the run starts (a busy machine): passed on once it has started
      pending.append(signum)
      return
    now, passed = time.monotonic(), [t for _, t, p in received if p]
    forward = own_session or FORWARD[signum] != signum
    forward = forward and not (passed and now - passed[-1] < _REPEAT_S) and child.poll() is None
    received.append((signum, now, forward))
    if forward:
      child.send_signal(FORWARD[signum])

  with open(log_path, 'a', encoding='utf-8') as log:
    try:
      if threading.current_thread() is threading.main_thread():  # (handlers can only be set from the main thread)
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGUSR1, signal.SIGUSR2)}  # inherited
        # The other handlers before the run starts (exec resets them in the run), so no stop is lost meanwhile.
        previous.update({s: signal.signal(s, on_signal) for s in FORWARD if s not in previous})
      child = subprocess.Popen(cmd, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=own_session)
      if previous:
        for s in (signal.SIGUSR1, signal.SIGUSR2):
          signal.signal(s, on_signal)
      for signum in pending:
        on_signal(signum, None)
      return _wait(child, own_session, received, grace_s, log)
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
      if child is not None and child.poll() is None:  # an error in the launcher itself: leave no run behind
        _kill(child, own_session)


class RunFailed(RuntimeError):
  """Raised by run_job when its run failed: the job then fails too (sacct says FAILED), and outcome() reads the
  run's exit code back from the job's error."""

  def __init__(self, code: int):
    super().__init__(f'the run exited with code {code}')


_RUN_FAILED = re.compile(r'RunFailed: the run exited with code (-?\d+)')


def task_log(log_path: str) -> str:
  """Where this task of a job writes its run's output: log_path itself, or for task P > 0 of a SLURM job of several
  tasks, log_path with `.taskP.log` for `.log`."""
  task = int(os.environ.get('SLURM_PROCID', '0')) if os.environ.get('SUBMITIT_EXECUTOR') == 'slurm' else 0
  return log_path if task == 0 else f'{log_path.removesuffix(".log")}.task{task}.log'


def run_job(cmd: list[str], log_path: str, grace_s: float = 600.0) -> int:
  """The job the drivers submit, in every task of it: run_one(cmd, task_log(log_path), grace_s). Returns 0, or the
  code of a run stopped by a stop signal (resumable, see was_stopped); raises RunFailed for any other failure.

  In a SLURM job, a run stopped by a stop signal makes the job start again where the job goes on (s2s_jax/slurm.py:
  after_stop): the task then exits with REQUEUED_EXIT and no result, so the driver keeps waiting for the job, whose
  next start resumes the run from its checkpoint."""
  log = task_log(log_path)
  code = run_one(cmd, log, grace_s)
  if was_stopped(code) and os.environ.get('SUBMITIT_EXECUTOR') == 'slurm' and (job := slurm.job()):
    how = 'was killed after the grace' if code == KILLED else f'stopped on {signal.Signals(code - 128).name}'
    if slurm.requeue_after_stop(job, how, lambda message: _note_to(log, message)):
      sys.exit(REQUEUED_EXIT)
  if code != 0 and not was_stopped(code):
    raise RunFailed(code)
  return code


def _note_to(log_path: str, message: str) -> None:
  with open(log_path, 'a', encoding='utf-8') as log:
    log.write(f'[launch {time.strftime("%Y-%m-%d %H:%M:%S")}] {message}\n')


def outcome(job) -> int | str:
  """A finished job's result: its run's exit code (the first task's that is not 0, in a job of several tasks), or,
  where the job itself failed (cancelled, killed, lost), that failure in a few words."""
  try:
    codes = job.results()
  except Exception as e:  # pylint: disable=broad-except  (submitit's errors: the job failed or left no result)
    text = f'{type(e).__name__}: {e}'
    found = _RUN_FAILED.search(text)
    if found:
      return int(found.group(1))
    trace = text.split('-' * 22 + '\n')  # (submitit: a job's exception is its traceback between two such lines)
    lines = [line for line in (trace[1] if len(trace) > 2 else text).splitlines() if line.strip()]
    return f'job failed: {(lines[-1] if len(trace) > 2 else lines[0]).strip()}'
  return next((c for c in codes if c != 0), 0)


def job_name(job) -> str:
  """'SLURM job 123' or 'local job 4567' (the local job's process id)."""
  return f'{"SLURM" if EXECUTOR.value == "slurm" else "local"} job {job.job_id}'


def tail(path: str, lines: int = 15) -> str:
  """The last lines of a text file ('' when it is missing)."""
  try:
    with open(path, encoding='utf-8', errors='replace') as f:
      return ''.join(f.readlines()[-lines:])
  except OSError:
    return ''


def failure_report(job, log_path: str, code, lines: int = 15) -> str:
  """What the drivers print for a run that did not succeed: its job, the result, and the last lines of its log (of
  the job's own error output where the run wrote nothing, e.g. a job that never started its run)."""
  head = f'{describe(code)}; {job_name(job)}'
  text, shown = tail(log_path, lines), log_path
  if not text.strip():
    stderr = str(job.task(0).paths.stderr)
    text, shown = tail(stderr, lines), stderr
  others = sorted(os.path.basename(f) for f in glob.glob(glob.escape(log_path.removesuffix('.log')) + '.task*.log'))
  more = f' (other tasks: {", ".join(others)})' if others else ''
  if not text.strip():
    return f'{head}; nothing in {log_path}{more}'
  return f'{head}; last lines of {shown}{more}:\n' + ''.join(f'    {line}' for line in text.rstrip().splitlines(True))


def _kill(child: subprocess.Popen, own_session: bool) -> None:
  """SIGKILL to the run (and, in its own session, to every process it started), then reaps it."""
  if own_session:
    os.killpg(child.pid, signal.SIGKILL)
  else:
    child.kill()
  child.wait()


def _wait(child: subprocess.Popen, own_session: bool, received: list, grace_s: float, log) -> int:
  """Waits for the run; after the first stop signal at most grace_s seconds, then kills it. Notes each signal."""

  def note(message: str) -> None:
    log.write(f'[launch {time.strftime("%Y-%m-%d %H:%M:%S")}] {message}\n')
    log.flush()

  noted = 0
  while True:
    try:
      code = child.wait(timeout=0.2)
      break
    except subprocess.TimeoutExpired:
      pass
    for signum, _, passed in received[noted:]:
      name = signal.Signals(signum).name
      how = f'passed on to the run (pid {child.pid}) as {FORWARD[signum].name}' if passed else 'not passed on'
      note(f'{name} received: {how}; waiting up to {grace_s:g} s for the run to stop.')
    noted = len(received)
    if received and time.monotonic() - received[0][1] > grace_s:
      _kill(child, own_session)
      first = signal.Signals(received[0][0]).name
      note(f'The run did not stop within {grace_s:g} s of {first}: killed (exit {KILLED}).')
      return KILLED
  if not received:
    return code
  out = code if code != 0 else stopped_code(received[0][0])
  note(
    f'The run stopped {time.monotonic() - received[0][1]:.1f} s after {signal.Signals(received[0][0]).name} '
    f'(its exit code {code}; the job returns {out}).'
  )
  return out


def prepare_root(path: str) -> str:
  """The absolute root folder, created when missing. An existing one must belong to this user and must not be
  world-writable (nor its .submitit folder): submitit and the drivers load pickled jobs and results from it, so
  a folder another user controls could run their code as this user. Group-writable is allowed (shared project
  folders); the group's members are trusted like the folder's owner."""
  root = os.path.abspath(path)
  os.makedirs(root, exist_ok=True)
  for folder in (root, os.path.join(root, '.submitit')):
    for st in ([os.lstat(folder)] if os.path.islink(folder) else []) + (
      [os.stat(folder)] if os.path.exists(folder) else []
    ):
      if st.st_uid != os.geteuid():
        raise app.UsageError(
          f'--root={path}: {folder} belongs to {_user(st.st_uid)}, not to you ({_user(os.geteuid())}); submitit and '
          'the launcher load pickled jobs from it, so choose a folder of your own.'
        )
      if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
        raise app.UsageError(
          f'--root={path}: {folder} is writable by every user (mode {stat.S_IMODE(st.st_mode):o}); submitit and the '
          f'launcher load pickled jobs from it: run `chmod o-w {folder}` or choose another folder.'
        )
  return root


def _user(uid: int) -> str:
  try:
    return f'user {pwd.getpwuid(uid).pw_name!r} (uid {uid})'
  except KeyError:
    return f'uid {uid}'


def executor(root: str) -> submitit.Executor:
  """Where the drivers submit their jobs (run_job), with the resources the flags ask for (see the module's doc)."""
  tasks = NODES.value * TASKS_PER_NODE.value
  if EXECUTOR.value != 'slurm' and tasks > 1:
    raise app.UsageError(
      f'--nodes={NODES.value} --tasks_per_node={TASKS_PER_NODE.value}: a run of several processes needs '
      '--executor=slurm (by hand: python -m s2s_jax.main --coordinator_address=... --num_processes --process_id).'
    )
  if EXECUTOR.value == 'slurm' and not shutil.which('srun'):
    raise app.UsageError(
      "--executor=slurm: SLURM's commands (srun, sbatch) are not on PATH here; run the driver on a machine of the "
      'cluster (a login node), or use --executor=local.'
    )
  out = submitit.AutoExecutor(folder=os.path.join(root, '.submitit'), cluster=EXECUTOR.value)
  if EXECUTOR.value == 'slurm':
    out.update_parameters(
      slurm_partition=PARTITION.value,
      timeout_min=TIME.value,
      nodes=NODES.value,
      tasks_per_node=TASKS_PER_NODE.value,
      cpus_per_task=CPUS_PER_TASK.value,
      slurm_signal_delay_s=120,
      # The job runs sys.executable (submitit's default: the driver's virtual environment) in the repository, with
      # the driver's environment (PYTHONPATH, JAX and XLA settings, S2S_* folders): sbatch's default, stated here
      # (a site's SBATCH_EXPORT in the driver's environment still wins, as sbatch's input variables do).
      # --requeue: the job may start again (slurm.requeue_after_stop, `scontrol requeue`), whatever the cluster's
      # default.
      slurm_additional_parameters={'chdir': _REPO, 'export': 'ALL', 'requeue': True},
      # A task that fails ends the others (which would wait for it in a collective until the time limit).
      slurm_srun_args=['--kill-on-bad-exit=1'],
    )
    if GPUS.value:  # (0: no GPU request in the job at all)
      out.update_parameters(gpus_per_node=GPUS.value)
    if MEM.value:
      out.update_parameters(slurm_mem=MEM.value)
  else:
    out.update_parameters(timeout_min=TIME.value)
  return out
