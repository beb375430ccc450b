"""Source inputs: parameter names kept from before they moved out of the model, memory geometry without parameters."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import encoders
from s2s_jax import models
from s2s_jax import seq2seq_config

_COMMON = dict(
  tgt_vocab_size=7,
  embed_dim=8,
  hidden_dim=8,
  bidirectional=True,
  bridge='dense',
  attention='bahdanau',
  attention_score='additive',
)


def _init(**fields):
  cfg = seq2seq_config.Seq2SeqConfig(**_COMMON, **fields)
  mask = jnp.array([[1] * 12, [1] * 7 + [0] * 5])
  x = encoders.for_config(cfg).dummy_inputs(2, 12) * (mask if cfg.input_kind == 'tokens' else 1)
  model = models.Seq2Seq(cfg)
  variables = model.init(jax.random.PRNGKey(0), x, mask, jnp.ones((2, 3), jnp.int32))
  return cfg, model, variables, x, mask


class SourceInputTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('tokens', dict(src_vocab_size=9), {'src_embed'}),
    ('frames', dict(input_kind='frames', input_features=6, frame_stride=4), {'subsample0', 'subsample1', 'frame_proj'}),
    ('image', dict(input_kind='image', input_features=6, cnn_layers=2, cnn_features=4), {'grid', 'frame_proj'}),
  )
  def test_parameters_keep_their_top_level_names(self, fields, names):
    """Checkpoints written before the source inputs became modules of their own still load: same tree."""
    _, _, variables, _, _ = _init(**fields)
    params = variables['params']
    self.assertContainsSubset(names, set(params))
    self.assertNoCommonElements({'source', 'TokenInput_0', 'FrameInput_0', 'ImageInput_0'}, set(params))
    if 'src_embed' in names:
      self.assertEqual(params['src_embed']['embedding'].shape, (9, 8))
    if 'grid' in names:
      self.assertEqual(set(params['grid']), {'conv0', 'conv1'})

  @parameterized.named_parameters(
    ('tokens', dict(src_vocab_size=9)),
    ('tokens_pyramid', dict(src_vocab_size=9, pyramid=True, num_layers=3)),
    ('frames_pyramid', dict(input_kind='frames', input_features=6, frame_stride=2, pyramid=True, num_layers=2)),
    ('image', dict(input_kind='image', input_features=6, cnn_layers=1, cnn_features=4)),
    (
      'image_pyramid',
      dict(input_kind='image', input_features=6, cnn_layers=1, cnn_features=4, pyramid=True, num_layers=2),
    ),
  )
  def test_memory_mask_and_labels_follow_the_encoder(self, fields):
    cfg, model, variables, x, mask = _init(**fields)
    memory, _ = model.apply(variables, x, mask, method=models.Seq2Seq.encode)
    source = encoders.for_config(cfg)  # unbound: no parameters needed
    np.testing.assert_array_equal(memory['mask'], source.memory_mask(mask))
    labels = source.memory_labels([f'step{i}' for i in range(x.shape[1])])
    self.assertLen(labels, memory['values'].shape[1])
    out = model.apply(variables, x, mask, jnp.ones((2, 3), jnp.int32), method=models.Seq2Seq.teacher_forcing)
    np.testing.assert_array_equal(out.memory_mask, memory['mask'])
    self.assertEqual(out.attention.shape, (2, 3, memory['values'].shape[1]))

  def test_frame_labels_are_the_first_frame_of_each_memory_step(self):
    cfg = seq2seq_config.Seq2SeqConfig(
      **_COMMON, input_kind='frames', input_features=6, frame_stride=2, pyramid=True, num_layers=2
    )
    source = encoders.for_config(cfg)
    self.assertEqual(source.time_stride(), 4)
    self.assertEqual(source.memory_labels([str(i) for i in range(10)]), ['0', '4', '8'])

  def test_image_grid_shape(self):
    cfg = seq2seq_config.Seq2SeqConfig(**_COMMON, input_kind='image', input_features=30, image_channels=3, cnn_layers=2)
    self.assertEqual(encoders.for_config(cfg).grid_shape(11), (3, 3))  # 11 -> 6 -> 3 columns, 10 -> 5 -> 3 rows
    labels = encoders.for_config(cfg).memory_labels(['x'] * 11)
    self.assertEqual(labels[:4], ['x0y0', 'x0y1', 'x0y2', 'x1y0'])


if __name__ == '__main__':
  absltest.main()
