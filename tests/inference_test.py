"""Tests of s2s_jax.inference on workdirs of randomly initialised tiny models (no training): --checkpoint errors,
ensembles whose members read their inputs differently, and outputs that do not depend on the batch."""

import functools
import os
import random
import shutil
import tempfile

from absl.testing import absltest
import flax
import jax
import numpy as np
import testutil

from s2s_jax import decode
from s2s_jax import evaluation
from s2s_jax import inference
from s2s_jax.data import EOS_ID
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import pipeline

_LINES = [
  'le 3 mars 1998',
  'March 3, 1998',
  '1998/03/03',
  'Tuesday, March 3rd 98',
  '3.3.1998',
  'the 21st of august, 1987',
  'août 2099',
  '12/31/1999',
  '1 janvier 2000',
  'March 3, 1998',  # a line twice: the same output (the same samples) at both places
  'x' * 40,  # a long line widens nothing: every batch is padded to the same source length
]


@functools.cache
def _random_runs() -> tuple[str, str, str]:
  """(root, fwd, rev): two random tiny runs sharing root/data, `rev` with data.reverse_source=true; fwd keeps
  best/ at steps 20 and 40 (made once per test process)."""
  root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
  data = os.path.join(root, 'data')
  fwd = testutil.random_workdir(os.path.join(root, 'fwd'), data, seed=0, steps_=(20, 40))
  return root, fwd, testutil.random_workdir(os.path.join(root, 'rev'), data, seed=1, reverse_source=True)


class _RandomRuns(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root, cls.fwd, cls.rev = _random_runs()


class CheckpointSpecTest(_RandomRuns):
  def test_every_bad_checkpoint_is_one_line_naming_the_kept_steps(self):
    kept = r'keeps 2 checkpoint steps \(\[20, 40\]\), best/: \[20, 40\]'
    for spec, want in [
      ('avg:0', r'avg:0: .*' + kept + r'; ask for avg:1 to avg:2\.$'),
      ('avg:-1', r'avg:-1: .*' + kept + r'; ask for avg:1 to avg:2\.$'),
      ('avg:', r'avg:: expected avg:K .*' + kept),
      ('avg:99', r'avg:99: .*' + kept + '; ask for avg:1 to avg:2, or keep more with --config.keep_checkpoints'),
      ('avg:20,x', r'avg:20,x: expected avg:K or avg:STEP1,STEP2,\.\.\. \(integers\); .*' + kept),
      ('avg:20,30', r'avg:20,30: step\(s\) \[30\] not saved; .*' + kept),
      ('30', r'--checkpoint=30: step 30 is not kept; .*' + kept),
      ('nowhere', r'--checkpoint=nowhere: give best, latest, .* /?\S*nowhere is no folder; .*' + kept),
    ]:
      with self.subTest(spec):
        with self.assertRaisesRegex(ValueError, want) as raised:
          inference.load_all([self.fwd], spec)
        self.assertNotIn('\n', str(raised.exception))
    empty = os.path.join(self.create_tempdir().full_path, 'empty')
    shutil.copytree(self.fwd, empty, ignore=shutil.ignore_patterns('best'))
    for spec, want in [('latest', 'there is no checkpoint'), ('best', f'{empty}/best holds no checkpoint')]:
      with self.assertRaisesRegex(ValueError, f'--checkpoint={spec}: {want}; .* keeps 0 checkpoint steps'):
        inference.load_all([empty], spec)
    missing = os.path.join(self.root, 'missing')
    with self.assertRaisesRegex(ValueError, f'--workdir={missing}: .*config.json does not exist'):
      inference.load_all([missing])
    with self.assertRaisesRegex(ValueError, 'is not a folder of parameter checkpoints .* keeps 2 checkpoint steps'):
      inference.load_all([self.fwd], os.path.join(self.root, 'data'))  # a folder that is no checkpoint
    self.assertEqual(inference.load_all([self.fwd], 'avg:2')[0].step, 40)


def _decode(runs, lines, batch_size, **overrides):
  """Every line's hypotheses, decoded as translate does: each member's own encoding, sampling keys of the text."""
  inputs = inference.ensemble_inputs(runs)
  model, params = inference.ensemble(runs)
  options = decode.options(runs[0].config.decode, runs[0].config.data.max_tgt_len, **overrides)
  decoder = inference.Decoder(model, options, runs[0].tgt_vocab, src_len=inputs.max_len, batch_size=batch_size)
  examples = [inputs.encode(line)[0] for line in lines]
  keys = [inputs_lib.line_key(line) for line in lines]
  return decoder(flax.jax_utils.replicate(params), examples, seed=3, keys=keys)


class EnsembleInputsTest(_RandomRuns):
  def test_each_member_reads_the_input_its_own_way(self):
    fwd, rev = inference.load_all([self.fwd]), inference.load_all([self.rev])
    self.assertEqual(inference.differing_inputs(fwd + rev), ['data.reverse_source: False, True'])
    inputs = inference.ensemble_inputs(fwd + rev)
    (a, b), _ = inputs.encode('le 3 mars 1998')
    np.testing.assert_array_equal(b, np.append(a[-2::-1], EOS_ID))  # the reversed member: backwards, EOS last
    self.assertIs(inference.ensemble_inputs(fwd + fwd), fwd[0].inputs)  # members alike: one encoding
    lines = _LINES[:4]
    one, other = _decode(fwd + rev, lines, 8), _decode(rev + fwd, lines, 8)
    for line, x, y in zip(lines, one, other):
      self.assertEqual(x.texts, y.texts, line)  # whatever the order of the members
      self.assertEqual(x.scores, y.scores, line)
    # The score: at every step the members' log-probabilities averaged (and renormalized), each member reading its
    # own encoding of the line.
    for line, hyps in zip(lines, one):
      ids = [rev[0].tgt_vocab.tokens.index(t) for t in hyps.tokens[0]]
      members = []
      for run in fwd + rev:
        example = run.inputs.encode(line)[0][None]  # teacher forcing (equal to decode_step's logits: models_test)
        logits = run.model.apply(
          {'params': run.params}, example, np.ones(example.shape, np.int32), np.asarray([ids], np.int32)
        )
        members.append(jax.nn.log_softmax(np.asarray(logits[0], np.float32), axis=-1))
      logp = jax.nn.log_softmax(np.mean(members, axis=0), axis=-1)
      self.assertAlmostEqual(hyps.scores[0], float(sum(logp[t, i] for t, i in enumerate(ids))), places=4, msg=line)

  def test_an_ensemble_split_gives_each_member_its_own_encoding(self):
    runs = inference.load_all([self.rev, self.fwd])
    data = pipeline.prepare(runs[0].config.data, vocab_dir=runs[0].workdir)
    examples, src_len = evaluation.split_examples(runs, inference.ensemble_inputs(runs), data, 'test')
    self.assertLen(examples, len(data.splits['test'].src_ids))
    self.assertLen(src_len, 2)
    for (rev, fwd), line in zip(examples[:5], data.splits['test'].sources):
      np.testing.assert_array_equal(fwd, runs[1].inputs.encode(line)[0])
      np.testing.assert_array_equal(rev, runs[0].inputs.encode(line)[0])


class BatchInvarianceTest(_RandomRuns):
  """A line's output is the same whatever the batch size, the other lines of its batch and their order."""

  def _check(self, **overrides):
    runs = inference.load_all([self.fwd])
    inputs = runs[0].inputs
    model, params = inference.ensemble(runs)
    options = decode.options(runs[0].config.decode, runs[0].config.data.max_tgt_len, **overrides)
    params = flax.jax_utils.replicate(params)

    def outputs(lines, batch_size):
      decoder = inference.Decoder(model, options, runs[0].tgt_vocab, src_len=inputs.max_len, batch_size=batch_size)
      examples = [inputs.encode(line)[0] for line in lines]
      return [(h.texts, h.scores) for h in decoder(params, examples, seed=3)]

    reference = dict(zip(_LINES, outputs(_LINES, 16)))
    self.assertEqual(reference[_LINES[1]], outputs(_LINES, 16)[-2])  # the repeated line
    shuffled = random.Random(0).sample(_LINES, len(_LINES))
    for lines, batch_size in [(shuffled, 8), (shuffled[:3], 8), (_LINES[3:4], 8), (shuffled[5:], 16)]:
      for line, (texts, scores) in zip(lines, outputs(lines, batch_size)):
        self.assertEqual(texts, reference[line][0], (line, batch_size))
        np.testing.assert_allclose(scores, reference[line][1], rtol=1e-5, err_msg=line)
    return reference

  def test_greedy(self):
    self._check()

  def test_beam_search_with_penalties_and_n_best(self):
    reference = self._check(beam_size=3, length_alpha=0.6, coverage_beta=0.2)
    self.assertLen(reference[_LINES[0]][0], 3)  # every hypothesis of the n-best list was compared

  def test_sampling(self):
    reference = self._check(sample=True, num_samples=3, temperature=1.5)
    self.assertGreater(len({t for texts, _ in reference.values() for t in texts}), len(_LINES))  # it does sample


if __name__ == '__main__':
  absltest.main()
