"""A STOP file in the workdir (what scripts/tune.py writes to prune a trial it cannot signal: a SLURM job, a run on
another host) stops a run at its next validation as a preemption does: a checkpoint of that step, no DONE."""

import json
import os

from absl.testing import absltest
import testutil

from s2s_jax import checkpointing
from s2s_jax import train


class StopFileTest(absltest.TestCase):
  def test_a_stop_file_stops_the_run_at_the_next_validation_with_a_checkpoint(self):
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(self.create_tempdir().full_path, num_train_steps=60, eval_every_steps=20)
    config.checkpoint_every_steps = 40  # (the stop writes its own checkpoint at the validation's step)
    with open(os.path.join(workdir, 'STOP'), 'w', encoding='utf-8') as f:
      f.write('trial 3 pruned at step 10\n')
    with self.assertLogs(level='WARNING') as logs:
      train.train_and_evaluate(config, workdir)
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 20)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'DONE')))
    self.assertFalse(os.path.exists(os.path.join(workdir, 'STOP')))  # consumed: a rerun goes on
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
      self.assertEqual(max(json.loads(line)['step'] for line in f), 20)
    text = '\n'.join(logs.output)
    self.assertIn('STOP found (trial 3 pruned at step 10): stopping after this step', text)
    self.assertIn('STOP file: stopped at step 20 with a checkpoint', text)


if __name__ == '__main__':
  absltest.main()
