"""A stand-in for a training run that the launcher tests stop: `python stop_child.py OUT MODE [WORKDIR]`.

MODE `stop`: on SIGTERM or SIGINT it takes 1.5 s (its "stop checkpoint"), then writes OUT (the names of the signals
it got, space-separated) and exits 0. MODE `ignore`: it ignores both and never exits. With WORKDIR it holds that
workdir's lock (as a training run does) while it runs. OUT.ready (its pid) is written once the handlers are set.
"""

import contextlib
import os
import signal
import sys
import time

out, mode = sys.argv[1], sys.argv[2]
got = []
for sig in (signal.SIGTERM, signal.SIGINT):
  signal.signal(sig, signal.SIG_IGN if mode == 'ignore' else lambda signum, frame: got.append(signum))
with contextlib.ExitStack() as stack:
  if len(sys.argv) > 3:
    from s2s_jax import workdir_lock  # pylint: disable=g-import-not-at-top

    stack.enter_context(workdir_lock.WorkdirLock(sys.argv[3]))
  with open(out + '.pid', 'w', encoding='utf-8') as f:
    f.write(str(os.getpid()))
  os.replace(out + '.pid', out + '.ready')
  while not got:
    time.sleep(0.05)
  time.sleep(1.5)  # the stop checkpoint
  with open(out, 'w', encoding='utf-8') as f:
    f.write(' '.join(signal.Signals(s).name for s in got))
print('stopped cleanly', flush=True)
