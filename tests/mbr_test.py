"""Tests of minimum-Bayes-risk decoding: the utility matrix against sacreBLEU pair by pair, the selection rule, the
decoder's MBR mode on a random tiny run (beam and sampled candidates), and the config checks of the MBR fields."""

import functools
import itertools
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import sacrebleu
import testutil

from s2s_jax import config_checks
from s2s_jax import decode
from s2s_jax import evaluation
from s2s_jax import inference
from s2s_jax import mbr
from s2s_jax import parallel
from s2s_jax.data import inputs as inputs_lib

_TEXTS = [
  'A man in a blue shirt is riding a bike .',
  'a man rides a bicycle.',
  'A man in a blue shirt rides a bike',
  'Two dogs play in the snow!',
  '',
  'Ein Mann fährt Fahrrad.',
]


class UtilityTest(parameterized.TestCase):
  @parameterized.parameters('bleu', 'chrf')
  def test_the_matrix_is_sacrebleu_pair_by_pair(self, utility):
    score = sacrebleu.sentence_bleu if utility == 'bleu' else sacrebleu.sentence_chrf
    want = [[score(hyp, [ref]).score for ref in _TEXTS] for hyp in _TEXTS]
    np.testing.assert_array_equal(mbr.utility_matrix(_TEXTS, utility), want)
    self.assertGreater(len({round(x, 6) for row in want for x in row}), 6)  # not a degenerate matrix

  @parameterized.parameters('bleu', 'chrf')
  def test_an_outlier_beside_two_identical_candidates_is_never_chosen(self, utility):
    same, outlier = 'a little girl climbs into a wooden playhouse .', 'two dogs run through the deep snow together'
    for texts in set(itertools.permutations([same, same, outlier])):
      order, expected = mbr.rank(list(texts), utility)
      self.assertEqual(texts[order[0]], same, texts)
      self.assertEqual(texts[order[-1]], outlier, texts)
      self.assertTrue(np.all(np.diff(expected) <= 0))

  def test_expected_utility_leaves_a_candidate_out_of_its_own_mean(self):
    matrix = mbr.utility_matrix(_TEXTS[:3], 'chrf')
    want = [(matrix[i].sum() - matrix[i, i]) / 2 for i in range(3)]
    np.testing.assert_allclose(mbr.expected_utility(_TEXTS[:3], 'chrf'), want)
    np.testing.assert_array_equal(mbr.expected_utility(['only one'], 'bleu'), [0.0])
    with self.assertRaisesRegex(ValueError, r"decode.mbr='ter'.*\('bleu', 'chrf'\)"):
      mbr.utility_matrix(_TEXTS, 'ter')


@functools.cache
def _run() -> inference.Run:
  root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
  return inference.load(testutil.random_workdir(os.path.join(root, 'wd'), os.path.join(root, 'data'), seed=4))


class DecoderTest(parameterized.TestCase):
  _LINES = ('le 3 mars 1998', '12/31/2001', 'March 5, 1999', 'juin 2012')

  def _decode(self, **settings):
    run = _run()
    options = decode.options(run.config.decode, run.config.data.max_tgt_len, **settings)
    decoder = inference.Decoder(run.model, options, run.tgt_vocab, src_len=run.inputs.max_len, batch_size=4)
    examples = [run.inputs.encode(line)[0] for line in self._LINES]
    keys = [inputs_lib.line_key(line) for line in self._LINES]
    return decoder(parallel.replicate(run.params), examples, seed=7, keys=keys)

  @parameterized.parameters(
    ({'mbr_source': 'beam'}, {'beam_size': 4}),
    ({'mbr_source': 'sample', 'temperature': 1.3}, {'sample': True, 'num_samples': 4, 'temperature': 1.3}),
  )
  def test_mbr_reranks_the_candidates_by_their_expected_utility(self, mbr_settings, search):
    candidates = self._decode(length_alpha=0.0, **search)
    chosen = self._decode(length_alpha=0.0, mbr='chrf', mbr_candidates=4, **mbr_settings)
    for cands, got in zip(candidates, chosen):
      real = [t for t, s in zip(cands.texts, cands.scores) if s > -np.inf]
      order, expected = mbr.rank(real, 'chrf')
      self.assertEqual(got.texts[: len(real)], [real[k] for k in order])
      np.testing.assert_allclose(got.scores[: len(real)], expected)
      self.assertEqual(sorted(got.texts), sorted(cands.texts))  # the same candidates, reordered


class ConfigTest(absltest.TestCase):
  def test_the_mbr_fields_are_checked_before_anything_runs(self):
    for field, value, message in [
      ('mbr', 'ter', r"decode.mbr='ter' is not one of .*'none', 'bleu', 'chrf'"),
      ('mbr_source', 'nbest', r"decode.mbr_source='nbest' is not one of .*'sample', 'beam'"),
      ('mbr_candidates', 0, r'decode.mbr_candidates must be in \[1, 10000\], got 0'),
      ('epsilon', 1.0, r'decode.epsilon must be in \[0.0, 1.0\), got 1.0'),
      ('epsilon', -0.1, r'decode.epsilon must be in \[0.0, 1.0\), got -0.1'),
    ]:
      config = testutil.tiny_config('/tmp/unused')
      config.decode[field] = value
      with self.assertRaisesRegex(ValueError, message):
        config_checks.validate(config)

  def test_an_mbr_evaluation_is_named_by_its_settings(self):
    own = decode.options({'beam_size': 5}, 12)
    tag = lambda **o: evaluation.settings_tag('best', 40, (), 1, own, decode.options({'beam_size': 5}, 12, **o), 3)
    self.assertEqual(tag(mbr='chrf'), 'mbrchrf.seed3')
    self.assertEqual(tag(mbr='bleu', mbr_source='beam', mbr_candidates=8), 'mbrbleu.mbrn8.mbrfrombeam')
    self.assertEqual(tag(mbr_candidates=8, epsilon=0.02), '')  # MBR and sampling settings alone change nothing
    self.assertEqual(tag(mbr='chrf', epsilon=0.02), 'eps0.02.mbrchrf.seed3')


if __name__ == '__main__':
  absltest.main()
