"""Tests of the translate and evaluate command lines on a real (tiny) trained run."""

import gzip
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
import testutil

from s2s_jax import config_lib
from s2s_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import default  # pylint: disable=g-import-not-at-top,wrong-import-position

_DATES = [
  'le 3 mars 1998',
  'March 3, 1998',
  '1998/03/03',
  'Tuesday, March 3rd 98',
  '3.3.1998',
  '19980303',
  'the 21st of august, 1987',
  'août 2099',
  '12/31/1999',
  '1 janvier 2000',
]


def _run(module: str, *flags: str, stdin: str | None = None) -> subprocess.CompletedProcess:
  return testutil.run('-m', module, *flags, stdin=stdin)


@pytest.mark.slow  # trains a model, then runs translate / evaluate in subprocesses (about 100 s of CPU)
class CliTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.workdir = os.path.join(root, 'cli_run')
    config = default.get_config('size=tiny')
    config.data.data_dir = os.path.join(root, 'cli_data')
    config.num_train_steps = 60
    config.eval_every_steps = 20
    train.train_and_evaluate(config, cls.workdir)
    # A run with other vocabularies (the copy task), for the ensemble check.
    cls.copy_workdir = os.path.join(root, 'copy_run')
    family = config_lib.import_beside(os.path.join(testutil.ROOT, 'experiments', 'tasks', 'copy.py'), '_family.py')
    copy = family.task_config('copy', 'size=tiny')
    copy.data.data_dir = os.path.join(root, 'cli_data')
    copy.num_train_steps = 20
    train.train_and_evaluate(copy, cls.copy_workdir)

  def _write(self, name: str, lines: list[str]) -> str:
    path = os.path.join(self.create_tempdir().full_path, name)
    opener = gzip.open if name.endswith('.gz') else open
    with opener(path, 'wt', encoding='utf-8') as f:
      f.writelines(line + '\n' for line in lines)
    return path

  def test_lines_end_at_newline_only(self):
    """Form feed, U+2028/2029, U+0085, U+001C and a bare carriage return are characters inside a line: 7 input lines
    give 7 output lines, and the truncation warning names the right line (\r\n is one line end)."""
    lines = ['le 3 mars\x0c1998', 'March 3,\u20281998', '1998/03/03\u2029', 'x\x85y', 'a\rb', 'c\x1cd', 'y' * 200]
    path = os.path.join(self.create_tempdir().full_path, 'in.txt')
    with open(path, 'wb') as f:
      f.write(('\r\n'.join(lines) + '\n').encode('utf-8'))
    result = _run('s2s_jax.translate', f'--workdir={self.workdir}', f'--input={path}')
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertLen(result.stdout.split('\n'), len(lines) + 1)  # 7 lines, each ending in \n
    self.assertIn('Input line 7 is longer than', result.stderr)

  def test_translate_n_best_scores_empty_and_long_lines(self):
    lines = ['le 3 mars 1998', '', 'x' * 200, 'March 3, 1998']
    attention_dir = os.path.join(self.create_tempdir().full_path, 'att')
    result = _run(
      's2s_jax.translate',
      f'--workdir={self.workdir}',
      '--beam_size=3',
      '--n_best=3',
      '--print_scores',
      f'--attention_dir={attention_dir}',
      stdin='\n'.join(lines) + '\n',
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = result.stdout.splitlines()
    self.assertLen(out, 3 * len(lines))
    self.assertEqual(out[3:6], ['nan\t'] * 3)  # the empty line
    for group in (out[0:3], out[6:9], out[9:12]):
      scores = [float(line.split('\t', 1)[0]) for line in group]
      self.assertEqual(scores, sorted(scores, reverse=True))
      self.assertTrue(all(np.isfinite(scores)))
    self.assertIn('Input line 3 is longer than data.max_src_len', result.stderr)
    self.assertEqual(sorted(os.listdir(attention_dir)), ['000001.png', '000003.png', '000004.png'])

  def test_a_sentence_decodes_the_same_alone_and_in_a_batch_of_64(self):
    rng = np.random.RandomState(0)
    batch = [
      _DATES[i] + ' ' * int(rng.randint(0, 3)) + ('1' * int(rng.randint(0, 9))) for i in rng.randint(0, len(_DATES), 64)
    ]
    batch[17] = 'Tuesday, March 3rd 98'
    together = _run(
      's2s_jax.translate',
      f'--workdir={self.workdir}',
      '--beam_size=4',
      '--print_scores',
      '--batch_size=64',
      f'--input={self._write("batch.txt", batch)}',
    )
    alone = _run(
      's2s_jax.translate',
      f'--workdir={self.workdir}',
      '--beam_size=4',
      '--print_scores',
      '--batch_size=64',
      stdin='Tuesday, March 3rd 98\n',
    )
    self.assertEqual(together.returncode, 0, together.stderr[-3000:])
    self.assertEqual(alone.returncode, 0, alone.stderr[-3000:])
    self.assertEqual(alone.stdout.splitlines(), [together.stdout.splitlines()[17]])

  def test_evaluate_split_matches_the_training_test_evaluation(self):
    result = _run('s2s_jax.evaluate', f'--workdir={self.workdir}', '--split=test', '--name=test_again')
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(self.workdir, 'eval_test_again.json')) as f:
      again = json.load(f)
    with open(os.path.join(self.workdir, 'eval_test.json')) as f:
      trained = json.load(f)
    for key in ('bleu', 'bleu_lc', 'chrf', 'exact_match', 'len_ratio', 'num_sentences', 'checkpoint_step'):
      self.assertEqual(again[key], trained[key], key)
    # The training's test evaluation ran in this process on 8 devices, `evaluate` in a subprocess on 1: the NLL sum
    # runs in another order (psum of 8 partial sums), equal to float32 rounding, not bitwise.
    self.assertAlmostEqual(again['loss'], trained['loss'], delta=1e-6 * abs(trained['loss']))
    for record in (again, trained):  # what was evaluated: the training's own settings
      self.assertEqual(
        {k: record[k] for k in ('checkpoint', 'averaged_steps', 'ensemble_workdirs', 'decode_overrides', 'tag')},
        {
          'checkpoint': 'best',
          'averaged_steps': [],
          'ensemble_workdirs': ['.'],
          'decode_overrides': {},
          'tag': '',
        },
      )
    with open(os.path.join(self.workdir, 'eval_test_again.hyp.txt')) as f:
      hyps = f.read().splitlines()
    with open(os.path.join(self.workdir, 'eval_test.hyp.txt')) as f:
      self.assertEqual(hyps, f.read().splitlines())

  def test_evaluate_files_with_two_gzipped_references(self):
    source = self._write('dates.src.gz', _DATES)
    ref1 = self._write('dates.ref1.gz', ['1998-03-03'] * len(_DATES))
    ref2 = self._write('dates.ref2', ['1999-12-31'] * len(_DATES))
    result = _run(
      's2s_jax.evaluate',
      f'--workdir={self.workdir}',
      f'--source_file={source}',
      f'--reference_file={ref1}',
      f'--reference_file={ref2}',
      '--beam_size=2',
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(self.workdir, 'eval_dates.beam2.json')) as f:  # the source's stem, then what differs
      scores = json.load(f)
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
      self.assertIn(key, scores)
    self.assertIn('nrefs:2', scores['bleu_signature'])
    self.assertEqual((scores['num_sentences'], scores['beam_size']), (len(_DATES), 2))
    with open(os.path.join(self.workdir, 'eval_dates.beam2.hyp.txt')) as f:
      self.assertLen(f.read().splitlines(), len(_DATES))

  def test_evaluate_refuses_misaligned_files(self):
    source = self._write('a.txt', _DATES)
    ref = self._write('b.txt', _DATES[:-1])
    result = _run('s2s_jax.evaluate', f'--workdir={self.workdir}', f'--source_file={source}', f'--reference_file={ref}')
    self.assertNotEqual(result.returncode, 0)
    self.assertIn('has 9 lines but', result.stderr)

  def test_sampling_from_the_command_line(self):
    """--sample: num_samples consecutive lines per input, the same for a seed, others for another seed; a line's
    samples do not depend on its position, the other lines or --batch_size."""
    lines = ['le 3 mars 1998', '', 'March 3, 1998']
    sample = lambda seed, lines, *flags: _run(
      's2s_jax.translate',
      f'--workdir={self.workdir}',
      '--sample',
      '--num_samples=4',
      '--temperature=3.0',
      f'--seed={seed}',
      '--print_scores',
      *flags,
      stdin='\n'.join(lines) + '\n',
    )
    shuffled = ['1998/03/03', 'March 3, 1998', '3.3.1998', 'le 3 mars 1998', '19980303', 'March 3, 1998']
    first, again, other = sample(1, lines), sample(1, shuffled, '--batch_size=3'), sample(2, lines)
    for result in (first, again, other):
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out, again_out = first.stdout.splitlines(), again.stdout.splitlines()
    self.assertLen(out, 3 * 4)
    self.assertEqual(out[4:8], ['nan\t'] * 4)  # the empty line
    self.assertLen(again_out, 6 * 4)
    # The texts (a score's last printed digit may differ with the batch shape's arithmetic).
    out, again_out = ([line.split('\t', 1)[1] for line in x] for x in (out, again_out))
    self.assertEqual(again_out[4:8], out[8:12])  # 'March 3, 1998' elsewhere, among other lines, in other batches
    self.assertEqual(again_out[20:24], out[8:12])  # and again: identical lines, identical samples
    self.assertEqual(again_out[12:16], out[0:4])
    self.assertNotEqual(first.stdout, other.stdout)
    with_attention = _run(
      's2s_jax.translate', f'--workdir={self.workdir}', '--sample', '--attention_dir=/tmp/x', stdin='\n'.join(lines)
    )
    self.assertNotEqual(with_attention.returncode, 0)
    self.assertIn('does not combine with --sample', with_attention.stderr)

  def test_an_ensemble_of_a_model_with_itself_decodes_as_the_model(self):
    lines = '\n'.join(_DATES) + '\n'
    single = _run('s2s_jax.translate', f'--workdir={self.workdir}', '--beam_size=3', '--print_scores', stdin=lines)
    both = _run(
      's2s_jax.translate',
      f'--workdir={self.workdir}',
      f'--workdir={self.workdir}',
      '--beam_size=3',
      '--print_scores',
      stdin=lines,
    )
    self.assertEqual(single.returncode, 0, single.stderr[-3000:])
    self.assertEqual(both.returncode, 0, both.stderr[-3000:])
    split = lambda out: [line.split('\t', 1) for line in out.splitlines()]
    for (score_a, text_a), (score_b, text_b) in zip(split(single.stdout), split(both.stdout), strict=True):
      self.assertEqual(text_a, text_b)
      self.assertAlmostEqual(float(score_a), float(score_b), places=4)
    result = _run(
      's2s_jax.evaluate', f'--workdir={self.workdir}', f'--workdir={self.workdir}', '--split=test', '--beam_size=3'
    )
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(self.workdir, 'eval_test.ensemble2.beam3.json')) as f:  # the run's own is kept
      scores = json.load(f)
    self.assertEqual(scores['num_sentences'], 200)
    self.assertEqual(scores['ensemble_workdirs'], ['.', '.'])
    self.assertEqual((scores['decode_overrides'], scores['tag']), ({'beam_size': 3}, 'ensemble2.beam3'))

  def test_an_ensemble_with_another_vocabulary_is_refused(self):
    result = _run('s2s_jax.translate', f'--workdir={self.workdir}', f'--workdir={self.copy_workdir}', stdin='1 2\n')
    self.assertNotEqual(result.returncode, 0)
    self.assertIn('An ensemble needs one target vocabulary', result.stderr)
    self.assertIn('vocab.tgt.json differs', result.stderr)
    self.assertNotIn('flags:', result.stderr)  # one line, not the usage text

  def test_checkpoint_averaging(self):
    """avg:1 is the newest checkpoint itself; the script writes an average every command loads; bad requests fail
    naming the saved steps. None of these evaluations replaces the run's own eval_test.json: each is named by what
    differs (eval_test.<tag>.json) and records what it evaluated."""
    own = os.path.join(self.workdir, 'eval_test.json')
    with open(own, 'rb') as f:
      before = f.read()
    latest = _run('s2s_jax.evaluate', f'--workdir={self.workdir}', '--split=test', '--checkpoint=latest')
    avg1 = _run('s2s_jax.evaluate', f'--workdir={self.workdir}', '--split=test', '--checkpoint=avg:1')
    for result in (latest, avg1):
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    scores = {}
    for name in ('step60', 'avg1'):
      with open(os.path.join(self.workdir, f'eval_test.{name}.json')) as f:
        scores[name] = json.load(f)
      with open(os.path.join(self.workdir, f'eval_test.{name}.hyp.txt')) as f:
        scores[name]['hyps'] = f.read()
      self.assertEqual(scores[name]['tag'], name)
    for key in ('hyps', 'bleu', 'exact_match', 'checkpoint_step'):
      self.assertEqual(scores['step60'][key], scores['avg1'][key], key)
    self.assertEqual((scores['step60']['checkpoint'], scores['step60']['averaged_steps']), ('latest', []))
    self.assertEqual((scores['avg1']['checkpoint'], scores['avg1']['averaged_steps']), ('avg:1', [60]))
    output = os.path.join(self.create_tempdir().full_path, 'avg')
    script = os.path.join(testutil.ROOT, 'scripts', 'average_checkpoints.py')
    made = testutil.run(script, f'--workdir={self.workdir}', '--last=2', f'--output={output}')
    self.assertEqual(made.returncode, 0, made.stderr[-3000:])
    used = _run('s2s_jax.evaluate', f'--workdir={self.workdir}', '--split=test', f'--checkpoint={output}')
    self.assertEqual(used.returncode, 0, used.stderr[-3000:])
    with open(os.path.join(self.workdir, 'eval_test.avg.json')) as f:  # named by the folder
      averaged = json.load(f)
    self.assertEqual((averaged['checkpoint'], averaged['averaged_steps']), (output, [40, 60]))
    with open(own, 'rb') as f:
      self.assertEqual(f.read(), before)
    too_many = testutil.run(script, f'--workdir={self.workdir}', '--last=9', f'--output={output}2')
    self.assertNotEqual(too_many.returncode, 0)
    self.assertRegex(too_many.stderr, r'avg:9: .* keeps \d checkpoint steps \(\[')
    missing = _run('s2s_jax.translate', f'--workdir={self.workdir}', '--checkpoint=avg:60,999', stdin='x\n')
    self.assertNotEqual(missing.returncode, 0)
    self.assertIn('step(s) [999] not saved', missing.stderr)

  def test_a_bad_checkpoint_is_one_line_naming_the_kept_steps(self):
    for result in (
      _run('s2s_jax.translate', f'--workdir={self.workdir}', '--checkpoint=avg:0', stdin='x\n'),
      _run('s2s_jax.evaluate', f'--workdir={self.workdir}', '--split=test', '--checkpoint=7'),
    ):
      self.assertEqual(result.returncode, 1, result.stderr[-3000:])
      last = result.stderr.strip().splitlines()[-1]
      self.assertRegex(last, r'^Error: (avg:0: |--checkpoint=7: step 7 is not kept; ).*keeps \d checkpoint steps \(\[')
      self.assertNotIn('Traceback', result.stderr)
      self.assertNotIn('flags:', result.stderr)  # not the usage text


@pytest.mark.slow  # translate in subprocesses (no training: randomly initialised runs)
class EnsembleInputsCliTest(absltest.TestCase):
  def test_a_reversed_source_member_reads_reversed_sources_in_any_order(self):
    root = self.create_tempdir().full_path
    fwd = testutil.random_workdir(os.path.join(root, 'fwd'), os.path.join(root, 'data'), seed=0)
    rev = testutil.random_workdir(os.path.join(root, 'rev'), os.path.join(root, 'data'), seed=1, reverse_source=True)
    outputs = [
      _run(
        's2s_jax.translate',
        f'--workdir={a}',
        f'--workdir={b}',
        '--beam_size=2',
        '--print_scores',
        stdin='\n'.join(_DATES),
      )
      for a, b in ((fwd, rev), (rev, fwd))
    ]
    for result in outputs:
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertEqual(outputs[0].stdout, outputs[1].stdout)
    self.assertLen(outputs[0].stdout.splitlines(), len(_DATES))


if __name__ == '__main__':
  absltest.main()
