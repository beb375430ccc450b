"""Multi-host data parallelism: two processes on 127.0.0.1 (two CPU devices each, gloo collectives) train the
tiny default model as one 4-device program; both end with identical parameters, equal (to float rounding: the
gradient sum runs in another order) to one process with 4 devices on the same global batches."""

import json
import os
import re
import socket
import subprocess
import sys

from absl.testing import absltest
import jax
import numpy as np
import pytest
import testutil

from s2s_jax import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = [
  '-m',
  's2s_jax.main',
  '--config=experiments/default.py:size=tiny',
  '--config.num_train_steps=20',
  '--config.model.dropout_rate=0.0',
]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env(devices: int, data_dir: str) -> dict[str, str]:
  return testutil.env(devices, S2S_CACHE_DIR=data_dir)


@pytest.mark.slow
class MultiHostTest(absltest.TestCase):
  def test_two_processes_match_one(self):
    data_dir = self.create_tempdir().full_path
    multi, single = (os.path.join(self.create_tempdir().full_path, 'run') for _ in range(2))
    port = _free_port()
    procs = [
      subprocess.Popen(
        [
          sys.executable,
          *ARGS,
          f'--workdir={multi}',
          f'--coordinator_address=127.0.0.1:{port}',
          '--num_processes=2',
          f'--process_id={i}',
        ],
        cwd=ROOT,
        env=_env(2, data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
      for i in range(2)
    ]
    logs = []
    for p in procs:
      _, err = p.communicate(timeout=600)
      self.assertEqual(p.returncode, 0, err[-3000:])
      logs.append(err)
    digests = [re.findall(r'Process (\d): parameters at step 20 have sha256 (\w+)', log) for log in logs]
    self.assertEqual([d[0][0] for d in digests], ['0', '1'])
    self.assertEqual(digests[0][0][1], digests[1][0][1])  # both processes hold the same parameters
    self.assertIn('Process 1 of 2', logs[1])
    one = subprocess.run(
      [sys.executable, *ARGS, f'--workdir={single}'],
      cwd=ROOT,
      env=_env(4, data_dir),
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
    )
    self.assertEqual(one.returncode, 0, one.stderr[-3000:])
    # Each process read only its half of every global batch: at least its rows of the 20 batches trained on, and
    # well under the one-process run's count (which reads whole batches; all read a few batches ahead).
    reads = [int(re.search(r'Process \d read (\d+) training records', log).group(1)) for log in (*logs, one.stderr)]
    with open(os.path.join(single, 'config.json'), encoding='utf-8') as f:
      batch = json.load(f)['data']['batch_size']
    self.assertGreaterEqual(reads[2], 20 * batch)
    for r in reads[:2]:
      self.assertGreaterEqual(r, 20 * batch // 2)
      self.assertLess(r, 0.75 * reads[2])
    params_multi, step_multi = checkpointing.restore_params(multi, 'latest')
    params_single, step_single = checkpointing.restore_params(single, 'latest')
    self.assertEqual((step_multi, step_single), (20, 20))
    self.assertEqual(checkpointing.params_sha256(params_multi), digests[0][0][1])
    for a, b in zip(jax.tree.leaves(params_multi), jax.tree.leaves(params_single)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


if __name__ == '__main__':
  absltest.main()
