"""Tests of the real train_and_evaluate: the workdir contract, exact resume, refusals."""

import hashlib
import json
import os
import shutil

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import pytest
import testutil

from s2s_jax import checkpointing
from s2s_jax import train
from s2s_jax import workdir as workdir_lib

jax.config.update('jax_numpy_rank_promotion', 'raise')


def _tiny_config(data_dir, **overrides):
  return testutil.tiny_config(data_dir, constant_lr=True, **overrides)


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _without_timing(records):
  return [
    {k: v for k, v in r.items() if k != 'wall_s' and not k.endswith('_per_s') and k != 'test/decode_s'} for r in records
  ]


def _with_buckets(config, num_buckets):
  config.data.num_buckets = num_buckets
  return config


class TrainAndEvaluateTest(parameterized.TestCase):
  def test_end_to_end_writes_the_workdir_contract(self):
    workdir = self.create_tempdir().full_path
    config = _tiny_config(self.create_tempdir().full_path)
    train.train_and_evaluate(config, workdir)
    for name in (
      'config.json',
      'provenance.json',
      'data_report.json',
      'metrics.jsonl',
      'eval_test.json',
      'eval_test.hyp.txt',
      'DONE',
      'tensorboard',
      'checkpoints',
      'best',
    ):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
    self.assertTrue(os.path.isabs(saved['data']['data_dir']))
    self.assertGreater(saved['model']['src_vocab_size'], 4)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      result = json.load(f)
    for key in (
      'bleu',
      'bleu_signature',
      'bleu_lc',
      'chrf',
      'chrf_signature',
      'exact_match',
      'bleu_by_src_len',
      'len_ratio',
      'decode_s',
      'sentences_per_s',
      'num_sentences',
      'beam_size',
      'length_alpha',
      'checkpoint_step',
    ):
      self.assertIn(key, result)
    self.assertEqual(result['num_sentences'], config.data.num_eval_examples)
    with open(os.path.join(workdir, 'eval_test.hyp.txt')) as f:
      self.assertLen(f.read().splitlines(), config.data.num_eval_examples)
    records = _records(workdir)
    keys = set().union(*records)
    for key in (
      'train/loss',
      'train/perplexity',
      'train/token_accuracy',
      'train/learning_rate',
      'train/grad_norm',
      'train/steps_per_s',
      'train/target_tokens_per_s',
      'eval/loss',
      'eval/exact_match',
      'eval/bleu',
      'test/exact_match',
      'test/loss',
    ):
      self.assertIn(key, keys)
    self.assertEqual([r['step'] for r in records if 'train/loss' in r], [10, 20, 30, 40])
    self.assertLess(records[-1]['test/loss'], 2.5)  # it learned something in 40 steps
    with open(os.path.join(workdir, 'provenance.json')) as f:
      prov = json.load(f)
    for key in (
      'git_sha',
      'git_dirty',
      'packages',
      'devices',
      'xla_flags',
      'cpu',
      'command_line',
      'data_sha256',
      'tokenizer_sha256',
    ):
      self.assertIn(key, prov)
    with open(os.path.join(workdir, 'data_report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['splits']['train']['num_examples'], 2000)
    self.assertIn('padding_fraction', report['splits']['train'])
    self.assertLen(prov['starts'], 1)
    self.assertEqual(prov['starts'][0]['from_step'], 0)
    self.assertEqual(prov['starts'][0]['git_sha'], prov['git_sha'])
    # Running again on a finished workdir does nothing and keeps the records (and is not counted as a start).
    train.train_and_evaluate(config, workdir)
    self.assertEqual(_records(workdir), records)
    with open(os.path.join(workdir, 'provenance.json')) as f:
      self.assertEqual(json.load(f)['starts'], prov['starts'])

  @parameterized.parameters(1, 3)
  def test_stop_and_resume_is_exact(self, num_buckets):
    """20 steps (mid-epoch), stop, resume to 40 == 40 steps uninterrupted: same batches, parameters, metrics."""
    data_dir = self.create_tempdir().full_path
    straight, resumed = self.create_tempdir().full_path, self.create_tempdir().full_path
    config = lambda **kw: _with_buckets(_tiny_config(data_dir, **kw), num_buckets)
    train.train_and_evaluate(config(), straight)
    train.train_and_evaluate(config(num_train_steps=20), resumed)
    self.assertEqual(checkpointing.make_manager(resumed, 2).latest_step(), 20)
    wall_before = max(r['wall_s'] for r in _records(resumed))
    train.train_and_evaluate(config(), resumed)
    self.assertEqual(checkpointing.make_manager(resumed, 2).latest_step(), 40)
    # provenance.json counts the starts; wall_s goes on from the first part's (the run's time in all its starts).
    for workdir, from_steps in ((straight, [0]), (resumed, [0, 20])):
      with open(os.path.join(workdir, 'provenance.json')) as f:
        self.assertEqual([s['from_step'] for s in json.load(f)['starts']], from_steps)
    walls = [r['wall_s'] for r in _records(resumed)]
    self.assertEqual(walls, sorted(walls))
    self.assertGreater(min(r['wall_s'] for r in _records(resumed) if r['step'] > 20), wall_before)
    a, _ = checkpointing.restore_params(straight, 'latest')
    b, _ = checkpointing.restore_params(resumed, 'latest')
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The resumed run also holds the test evaluation that ended its first part; everything else matches.
    resumed_records = [
      r for r in _without_timing(_records(resumed)) if not (r['step'] == 20 and any(k.startswith('test/') for k in r))
    ]
    self.assertEqual(resumed_records, _without_timing(_records(straight)))

  def test_changed_config_refuses_to_resume(self):
    data_dir = self.create_tempdir().full_path
    workdir = self.create_tempdir().full_path
    train.train_and_evaluate(_tiny_config(data_dir, num_train_steps=10), workdir)
    changed = _tiny_config(data_dir, num_train_steps=20)
    changed.optim.learning_rate = 0.5
    with self.assertRaisesRegex(ValueError, r'(?s)optim.learning_rate: 0.003 -> 0.5.*--allow_config_change'):
      train.train_and_evaluate(changed, workdir)
    train.train_and_evaluate(changed, workdir, allow_config_change=True)
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 20)

  @pytest.mark.slow  # end-to-end (two training runs)
  def test_resuming_on_changed_data_refuses_and_allowed_keeps_a_history(self):
    folder = self.create_tempdir().full_path
    rng = np.random.RandomState(0)
    words = [' '.join(rng.choice(['ab', 'cd', 'ef', 'gh'], size=rng.randint(1, 5))) for _ in range(120)]
    for name, lines in (('train.tsv', words[:100]), ('dev.tsv', words[100:])):
      with open(os.path.join(folder, name), 'w') as f:
        f.writelines(f'{w}\t{w[::-1]}\n' for w in lines)
    config = lambda steps: _tiny_config(self.create_tempdir().full_path, num_train_steps=steps)
    workdir = self.create_tempdir().full_path

    def run(steps, **kwargs):
      c = config(steps)
      c.data.update(
        name='parallel_text',
        files=f'train={folder}/train.tsv;validation={folder}/dev.tsv;test={folder}/dev.tsv',
        data_dir=os.path.join(folder, 'cache'),
      )
      train.train_and_evaluate(c, workdir, **kwargs)
      with open(os.path.join(workdir, 'provenance.json')) as f:
        return json.load(f)

    first = run(20)
    with open(os.path.join(folder, 'train.tsv'), 'rb') as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    self.assertIn(
      {'path': f'{folder}/train.tsv', 'sha256': digest},
      [{k: x[k] for k in ('path', 'sha256')} for x in first['data_manifest']['files']],
    )
    self.assertEqual(first['data_history'], [{'data_sha256': first['data_sha256'], 'from_step': 0}])
    with open(os.path.join(folder, 'train.tsv'), 'a') as f:
      f.write('ab cd\tdc ba\n')
    with self.assertRaisesRegex(
      ValueError,
      rf'The data changed since this run started \(changed: {folder}/train.tsv\)'
      r'.*--allow_config_change',
    ):
      run(40)
    second = run(40, allow_config_change=True)
    self.assertNotEqual(second['data_sha256'], first['data_sha256'])
    self.assertEqual(
      second['data_history'],
      [{'data_sha256': first['data_sha256'], 'from_step': 0}, {'data_sha256': second['data_sha256'], 'from_step': 20}],
    )
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 40)

  @parameterized.parameters(
    ('test_splits', 'test,tst', r"data.test_splits names 'tst'"),
    ('eval_split', 'valid', r"data.eval_split names 'valid'"),
  )
  def test_unknown_split_names_fail_before_training(self, field, value, message):
    config = _tiny_config(self.create_tempdir().full_path)
    config.data[field] = value
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(
      ValueError,
      message + r", which data.name='dates' does not have; its splits are "
      r'test, train, validation',
    ):
      train.train_and_evaluate(config, workdir)
    self.assertEqual(os.listdir(workdir), [])  # nothing trained or written

  def test_batch_size_must_split_over_devices(self):
    config = _tiny_config(self.create_tempdir().full_path)
    config.data.batch_size = 12
    with self.assertRaisesRegex(ValueError, 'data.batch_size=12 must be a multiple of the device count 8'):
      train.train_and_evaluate(config, self.create_tempdir().full_path)

  def test_early_stopping_ends_the_run_and_a_rerun_keeps_it(self):
    """eval.patience=1 with a frozen model (learning rate 0): validation at step 10 is the best, step 20 brings no
    improvement, so training stops there (checkpoint 20, the reason in metrics.jsonl), the best checkpoint is tested
    and the run is DONE; running it again does nothing."""
    workdir = self.create_tempdir().full_path
    config = _tiny_config(self.create_tempdir().full_path, eval_every_steps=10, checkpoint_every_steps=10)
    config.optim.learning_rate = 0.0
    config.eval.patience = 1
    train.train_and_evaluate(config, workdir)
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 20)
    records = _records(workdir)
    self.assertEqual([r['step'] for r in records if 'eval/stopped_early' in r], [20])
    self.assertLessEqual(max(r['step'] for r in records if 'train/loss' in r), 20)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      self.assertEqual(json.load(f)['checkpoint_step'], 10)
    self.assertTrue(os.path.exists(os.path.join(workdir, 'DONE')))
    train.train_and_evaluate(config, workdir)
    self.assertEqual(_records(workdir), records)
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 20)

  def test_early_stopping_counts_the_validations_that_happened_when_eval_every_steps_changes(self):
    """eval.patience=2 with a frozen model: the first part validates at 10 (the best) and 20 (one without
    improvement) and ends. Resumed to 40 with a validation every 5 steps, the second validation without improvement
    is at 25: training stops there. Before: 20 // 5 - 10 // 5 = 2 counted as two validations, and the resumed run
    stopped at once without validating."""
    workdir = self.create_tempdir().full_path
    config = _tiny_config(
      self.create_tempdir().full_path, num_train_steps=20, eval_every_steps=10, checkpoint_every_steps=10
    )
    config.optim.learning_rate = 0.0
    config.eval.patience = 2
    train.train_and_evaluate(config, workdir)
    self.assertEqual([r['step'] for r in _records(workdir) if 'eval/loss' in r], [10, 20])
    config.update(num_train_steps=40, eval_every_steps=5)
    train.train_and_evaluate(config, workdir)
    records = _records(workdir)
    self.assertEqual([r['step'] for r in records if 'eval/loss' in r], [10, 20, 25])
    self.assertEqual([r['step'] for r in records if 'eval/stopped_early' in r], [25])
    self.assertEqual(checkpointing.make_manager(workdir, 2).latest_step(), 25)


def _snapshot(workdir):
  """{relative path: (size, mtime)} of every file under `workdir`."""
  out = {}
  for folder, _, files in os.walk(workdir):
    for name in files:
      stat = os.stat(os.path.join(folder, name))
      out[os.path.relpath(os.path.join(folder, name), workdir)] = (stat.st_size, stat.st_mtime_ns)
  return out


class LostCheckpointsTest(absltest.TestCase):
  """A finished run (DONE), or one that recorded a committed checkpoint (saves.json), whose checkpoints/ are gone
  refuses to start again. Before: it trained again from step 0, replacing metrics.jsonl, eval_test.json and DONE."""

  def _workdir(self, done=False, saves=None, folders=()):
    workdir = self.create_tempdir().full_path
    for name in folders:
      os.makedirs(os.path.join(workdir, 'checkpoints', name))
    if done:
      workdir_lib.mark_done(workdir)
    if saves is not None:
      with open(os.path.join(workdir, workdir_lib.SAVES_FILE), 'w') as f:
        json.dump({'committed_steps': saves}, f)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.write('{"step": 10, "train/loss": 1.0}\n')
    return workdir

  def test_what_can_start_and_what_refuses(self):
    for case in (
      {},  # a new run, or one killed before its first checkpoint committed: starts from step 0
      dict(folders=['20.orbax-checkpoint-tmp-1']),  # killed during its first save
      dict(done=True, saves=[20, 40], folders=['40']),
      dict(saves=[20, 40, 60], folders=['60']),  # older checkpoints pruned (keep_checkpoints)
      dict(saves=[20], folders=['20.damaged-20260101T000000']),  # every checkpoint damaged: starts over, as told
    ):
      workdir_lib.check_resumable(self._workdir(**case))
    for case, message in (
      (dict(done=True), r'holds a finished run \(DONE\) but no checkpoint is left in .*/checkpoints'),
      (dict(saves=[20, 40]), 'records checkpoints up to step 40 in saves.json but no checkpoint is left'),
      (dict(saves=[20], folders=['40.orbax-checkpoint-tmp-1']), 'records checkpoints up to step 20'),
    ):
      workdir = self._workdir(**case)
      with self.assertRaisesRegex(workdir_lib.NotResumableError, message) as raised:
        workdir_lib.check_resumable(workdir)
      self.assertIn('Restore its checkpoints/ to continue it, or train into a new --workdir', str(raised.exception))
      self.assertIn(f'python -m s2s_jax.evaluate --workdir={workdir} --split=test', str(raised.exception))

  def test_a_vmapped_run_and_its_seed_folders_refuse_without_checkpoints(self):
    data_dir, workdir = self.create_tempdir().full_path, self.create_tempdir().full_path
    config = _tiny_config(data_dir, num_train_steps=10, num_seeds=2)
    train.train_and_evaluate(config, workdir)
    seeds = [os.path.join(workdir, f'seed_{s}') for s in (0, 1)]
    for folder in (workdir, *seeds):
      with open(os.path.join(folder, workdir_lib.SAVES_FILE)) as f:
        self.assertEqual(json.load(f), {'committed_steps': [10]})
    shutil.rmtree(os.path.join(workdir, 'checkpoints'))
    before = _snapshot(workdir)
    seed_config = _tiny_config(data_dir, num_train_steps=10, seed=1)
    for what in ('holds a finished run \\(DONE\\)', 'records checkpoints up to step 10 in saves.json'):
      if 'saves.json' in what:  # the record alone refuses too
        for folder in (workdir, *seeds):
          os.remove(os.path.join(folder, 'DONE'))
        before = _snapshot(workdir)
      with self.assertRaisesRegex(
        workdir_lib.NotResumableError,
        rf'{workdir} {what} but no checkpoint is left.*--workdir={workdir}/seed_<s> --split=test',
      ):
        train.train_and_evaluate(config, workdir)
      with self.assertRaisesRegex(
        workdir_lib.NotResumableError,
        rf'{seeds[1]} {what} but has no checkpoints/ of its own: it is a seed folder of the vmapped run {workdir}',
      ):
        train.train_and_evaluate(seed_config, seeds[1])
      self.assertEqual(_snapshot(workdir), before)  # nothing written


if __name__ == '__main__':
  absltest.main()
