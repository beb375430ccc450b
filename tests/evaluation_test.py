"""Tests of the names and records of evaluations (s2s_jax.evaluation.settings_tag / settings_record)."""

from absl.testing import absltest

from s2s_jax import decode
from s2s_jax import evaluation

_OWN = decode.options({'beam_size': 1, 'length_alpha': 0.0}, 12)  # a run's own decoding settings


def _tag(checkpoint='best', step=40, averaged=(), members=1, seed=0, **overrides):
  options = decode.options({'beam_size': 1, 'length_alpha': 0.0}, 12, **overrides)
  return evaluation.settings_tag(checkpoint, step, averaged, members, _OWN, options, seed)


class SettingsTagTest(absltest.TestCase):
  def test_the_training_settings_have_no_tag(self):
    self.assertEqual(_tag(), '')
    self.assertEqual(_tag(beam_size=1, length_alpha=0.0, max_len=12), '')  # equal to the run's own settings
    self.assertEqual(_tag(batch_size=7), '')  # no setting: hypotheses do not depend on the batch
    self.assertEqual(_tag(temperature=2.0, top_k=3), '')  # sampling settings without --sample change nothing

  def test_every_difference_is_named_in_order(self):
    self.assertEqual(_tag('avg:2', averaged=(20, 40)), 'avg2')
    self.assertEqual(_tag('avg:20,40', averaged=(20, 40)), 'avg20_40')
    self.assertEqual(_tag('400', step=400), 'step400')
    self.assertEqual(_tag('latest', step=60), 'step60')
    self.assertEqual(_tag('averaged', averaged=(20, 40)), 'averaged')
    self.assertEqual(_tag('/runs/x/my avg/'), 'my_avg')
    self.assertEqual(_tag(beam_size=10), 'beam10')
    self.assertEqual(_tag(members=3), 'ensemble3')
    self.assertEqual(_tag('avg:2', averaged=(20, 40), beam_size=10), 'avg2.beam10')
    self.assertEqual(
      _tag('avg:2', members=2, beam_size=4, length_alpha=0.6, coverage_beta=0.2, max_len_a=1.5, max_len_b=2),
      'avg2.ensemble2.beam4.alpha0.6.maxlena1.5.maxlenb2.cov0.2',
    )
    self.assertEqual(_tag(sample=True, num_samples=4, temperature=1.5, seed=3), 'sample.samples4.temp1.5.seed3')

  def test_the_record_names_what_was_evaluated(self):
    record = evaluation.settings_record('/r/a', 'avg:2', [20, 40], ['/r/a', '/r/b'], {'beam_size': 10}, 'avg2.beam10')
    self.assertEqual(
      record,
      {
        'checkpoint': 'avg:2',
        'averaged_steps': [20, 40],
        'ensemble_workdirs': ['.', '../b'],  # relative to the workdir holding the file
        'decode_overrides': {'beam_size': 10},
        'tag': 'avg2.beam10',
      },
    )
    self.assertEqual(evaluation.settings_record('a', 'best', [], ['a'], {}, '', seed=3)['seed'], 3)


if __name__ == '__main__':
  absltest.main()
