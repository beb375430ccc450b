"""Image captioning: the digit canvases and the image-folder builder, the image frontend's column layout, the CNN
grid encoder's memory mask, the doubly stochastic attention regulariser, and a tiny end-to-end run (train,
evaluate on image files, translate with per-token attention overlays)."""

import json
import os
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import testutil

from s2s_jax import encoders
from s2s_jax import models
from s2s_jax import seq2seq_config
from s2s_jax import steps
from s2s_jax import train
from s2s_jax.data import image_datasets
from s2s_jax.data import images
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import pipeline
from s2s_jax.data import registry
from s2s_jax.data.datasets import digits_captions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments.captioning import digits  # pylint: disable=g-import-not-at-top,wrong-import-position


class DigitCanvasTest(absltest.TestCase):
  def test_digit_pools_are_disjoint_and_cover_every_image(self):
    pools = {
      s: {i for i in range(1797) if digits_captions.digits_split(i) == s} for s in ('train', 'validation', 'test')
    }
    self.assertEqual(sum(map(len, pools.values())), 1797)
    self.assertEqual(len(pools['train'] | pools['validation'] | pools['test']), 1797)
    self.assertBetween(len(pools['test']) / 1797, 0.19, 0.21)

  def test_canvases_draw_only_the_given_images_left_to_right(self):
    # Ten 8x8 "digits", each a solid block whose grey level encodes its label: every drawn pixel must belong to a
    # given image, and the labels read left to right must be the caption.
    labels = np.arange(10)
    glyphs = np.ones((10, 8, 8)) * 16.0
    rng = np.random.default_rng(0)
    for canvas, caption in digits_captions.digit_canvases(glyphs, labels, 50, rng, 24, 100, max_digits=5):
      words = caption.split()
      self.assertBetween(len(words), 1, 5)
      self.assertEqual(canvas.shape, (24, 100))
      columns = np.flatnonzero(canvas.max(axis=0) > 0)
      runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
      self.assertLessEqual(len(runs), len(words))  # touching digits (gap 0) merge into one run
      widths = sum(len(r) for r in runs)
      self.assertBetween(widths, 10 * len(words) - 2, 16 * len(words))

  def test_canvas_too_small_for_the_digits_fails(self):
    with self.assertRaisesRegex(ValueError, 'image_width >= 98 for 5 digits'):
      next(digits_captions.digit_canvases(np.ones((1, 8, 8)), np.zeros(1, int), 1, np.random.default_rng(0), 24, 60, 5))

  def test_builder_splits_and_determinism(self):
    config = digits.get_config('size=tiny')
    config.data.data_dir = self.create_tempdir().full_path
    pipeline.resolve_paths(config.data)
    pictures, skipped = image_datasets.load_pictures(registry.of(config.data), config.data)
    self.assertEqual({k: len(v) for k, v in pictures.items()}, {'train': 64, 'validation': 32, 'test': 32})
    self.assertEqual(skipped, [])
    picture, caption = pictures['test'][0]
    self.assertEqual(picture.pixels.shape, (24, 100, 1))
    self.assertEqual(picture.pixels.dtype, np.uint8)
    self.assertTrue(set(caption.split()) <= set(digits_captions.DIGIT_WORDS))
    config.data.data_dir = self.create_tempdir().full_path
    again, _ = image_datasets.load_pictures(registry.of(config.data), config.data)
    np.testing.assert_array_equal(again['test'][0][0].pixels, picture.pixels)
    self.assertEqual([c for _, c in again['train']], [c for _, c in pictures['train']])


class FrontendAndFolderTest(absltest.TestCase):
  def test_columns_layout_round_trips(self):
    frontend = images.ImageFrontend(height=4, width=6, channels=3)
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    x = frontend.encode(images.Picture('p', pixels))
    self.assertEqual(x.shape, (6, 12))
    self.assertAlmostEqual(float(x[5, 2 * 3 + 1]), pixels[2, 5, 1] / 255.0, places=6)
    back = inputs_lib.ImageInputs(frontend).pixels(x)
    np.testing.assert_allclose(back * 255.0, pixels, atol=1e-4)
    with self.assertRaisesRegex(ValueError, r'q: image of \(4, 5, 3\)'):
      frontend.encode(images.Picture('q', pixels[:, :5]))

  def test_image_folder_resizes_and_skips_unreadable_files(self):
    folder = self.create_tempdir().full_path
    Image.fromarray(np.full((30, 50, 3), 200, np.uint8)).save(os.path.join(folder, 'a.png'))
    Image.fromarray(np.full((10, 10), 50, np.uint8)).save(os.path.join(folder, 'b.jpg'))
    with open(os.path.join(folder, 'c.png'), 'wb') as f:
      f.write(b'not an image')
    with open(os.path.join(folder, 'captions.tsv'), 'w') as f:
      f.write('a.png#0\ta light square\na.png#1\tbright\nb.jpg\ta dark square\nc.png\tbroken\n')
    with open(os.path.join(folder, 'test.tsv'), 'w') as f:
      f.write('b.jpg\ta dark square\n')
    config = digits.get_config('size=tiny')
    config.data.update(
      name='image_folder',
      files=f'train={folder}/captions.tsv;test={folder}/test.tsv',
      image_height=8,
      image_width=16,
      image_channels=1,
      eval_split='train',
      data_dir=self.create_tempdir().full_path,
    )
    pipeline.resolve_paths(config.data)
    data = pipeline.prepare(config.data)
    self.assertEqual(data.splits['train'].targets, ['a light square', 'bright', 'a dark square'])
    self.assertEqual(data.report['skipped_images']['count'], 1)  # c.png, in the training split
    self.assertIn('c.png: not a readable image', data.report['skipped_images']['files'][0])
    config.data.files = f'train={folder}/captions.tsv;test={folder}/captions.tsv'  # c.png in the test split too
    pipeline.resolve_paths(config.data)
    with self.assertRaisesRegex(
      ValueError,
      r"captions.tsv:4: .*c.png: not a readable image.*'test' split are never "
      'dropped',
    ):
      pipeline.prepare(config.data)
    x = data.splits['train'].src_ids[0]
    self.assertEqual(x.shape, (16, 8))
    self.assertAlmostEqual(float(x.mean()), 200 / 255, places=2)
    self.assertEqual(data.frontend, images.ImageFrontend(8, 16, 1))

  def test_a_decompression_bomb_is_an_unreadable_image(self):
    path = os.path.join(self.create_tempdir().full_path, 'big.png')
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    with mock.patch.object(Image, 'MAX_IMAGE_PIXELS', 64 * 64 // 4):  # PIL refuses more than twice this
      with self.assertRaisesRegex(ValueError, 'big.png: not a readable image'):
        images.read_image(path, 8, 8, 1)


class GridAndRegulariserTest(parameterized.TestCase):
  @parameterized.named_parameters(
    ('tokens', dict(src_vocab_size=9)),
    ('frames', dict(input_kind='frames', input_features=6, frame_stride=2)),
    ('frames_pyramid', dict(input_kind='frames', input_features=6, frame_stride=4, pyramid=True, num_layers=2)),
    ('image', dict(input_kind='image', input_features=6, cnn_layers=2, cnn_features=4)),
    ('image_rgb', dict(input_kind='image', input_features=6, image_channels=3, cnn_layers=1, cnn_features=4)),
  )
  def test_memory_mask_matches_the_encoder(self, fields):
    cfg = seq2seq_config.Seq2SeqConfig(
      tgt_vocab_size=7,
      embed_dim=8,
      hidden_dim=8,
      bidirectional=True,
      bridge='dense',
      attention='bahdanau',
      attention_score='additive',
      **fields,
    )
    model = models.Seq2Seq(cfg)
    mask = jnp.array([[1] * 11, [1] * 5 + [0] * 6, [0] * 11])
    x = mask if cfg.input_kind == 'tokens' else jnp.ones((3, 11, 6))
    variables = model.init(jax.random.PRNGKey(0), x, mask, jnp.ones((3, 2), jnp.int32))
    memory, _ = model.apply(variables, x, mask, method=models.Seq2Seq.encode)
    np.testing.assert_array_equal(memory['mask'], encoders.for_config(cfg).memory_mask(mask))
    self.assertEqual(memory['values'].shape[1], memory['mask'].shape[1])
    if cfg.input_kind == 'image':
      inputs = inputs_lib.ImageInputs(images.ImageFrontend(6 // cfg.image_channels, 11, cfg.image_channels))
      self.assertLen(encoders.for_config(cfg).memory_labels(inputs.labels(None)), memory['mask'].shape[1])

  def test_doubly_stochastic_loss(self):
    attn = jnp.array([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])  # one example, two tokens, three memory steps
    weights = jnp.ones((1, 2))
    self.assertAlmostEqual(float(steps.doubly_stochastic_loss_sum(attn, weights, jnp.array([[1, 1, 0]]))), 0.0)
    self.assertAlmostEqual(float(steps.doubly_stochastic_loss_sum(attn, weights, jnp.array([[1, 1, 1]]))), 1.0)
    self.assertAlmostEqual(
      float(steps.doubly_stochastic_loss_sum(attn, jnp.array([[1.0, 0.0]]), jnp.array([[1, 1, 0]]))), 0.5
    )

  def test_regulariser_changes_the_training_loss(self):
    cfg = seq2seq_config.Seq2SeqConfig(
      input_kind='image',
      input_features=8,
      tgt_vocab_size=7,
      embed_dim=8,
      hidden_dim=8,
      bidirectional=True,
      bridge='dense',
      attention='bahdanau',
      attention_score='additive',
      cnn_features=4,
    )
    model = models.Seq2Seq(cfg)
    batch = {
      'inputs': jnp.ones((2, 12, 8)),
      'inputs_mask': jnp.ones((2, 12), jnp.int32),
      'targets': jnp.array([[4, 5, 3], [6, 3, 0]]),
    }
    params = model.init(jax.random.PRNGKey(0), batch['inputs'], batch['inputs_mask'], batch['targets'])['params']
    plain, _ = steps._loss_and_sums(params, model.apply, batch, jax.random.PRNGKey(1), 0.0)  # pylint: disable=protected-access
    regularised, _ = steps._loss_and_sums(
      params,
      model.apply,
      batch,
      jax.random.PRNGKey(1),
      0.0,  # pylint: disable=protected-access
      doubly_stochastic_weight=2.0,
    )
    self.assertGreater(float(regularised), float(plain))


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
  return testutil.run(*args, stdin=stdin)


class EndToEndTest(absltest.TestCase):
  @pytest.mark.slow  # about 60 s; the fast tier keeps the builder, frontend, encoder and regulariser tests
  def test_trains_evaluates_files_and_draws_overlays(self):
    config = digits.get_config('size=tiny')
    config.data.data_dir = self.create_tempdir().full_path
    config.optim.doubly_stochastic_weight = 0.01
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      result = json.load(f)
    self.assertEqual(result['num_sentences'], 32)
    for key in ('bleu', 'exact_match'):
      self.assertBetween(result[key], 0.0, 100.0)
    pipeline.resolve_paths(config.data)
    pictures, _ = image_datasets.load_pictures(registry.of(config.data), config.data)
    folder = self.create_tempdir().full_path
    paths, refs = [], []
    for i, (picture, caption) in enumerate(pictures['test'][:3]):
      paths.append(os.path.join(folder, f'{i}.png'))
      Image.fromarray(picture.pixels[..., 0]).save(paths[-1])
      refs.append(caption)
    with open(os.path.join(folder, 'src.txt'), 'w') as f:
      f.write('\n'.join(paths) + '\n')
    with open(os.path.join(folder, 'ref.txt'), 'w') as f:
      f.write('\n'.join(refs) + '\n')
    evaluated = _run(
      '-m',
      's2s_jax.evaluate',
      f'--workdir={workdir}',
      f'--source_file={folder}/src.txt',
      f'--reference_file={folder}/ref.txt',
    )
    self.assertEqual(evaluated.returncode, 0, evaluated.stderr[-3000:])
    with open(os.path.join(workdir, 'eval_src.json')) as f:
      self.assertEqual(json.load(f)['num_sentences'], 3)
    plots = os.path.join(folder, 'att')
    translated = _run(
      '-m',
      's2s_jax.translate',
      f'--workdir={workdir}',
      f'--attention_dir={plots}',
      stdin=paths[0] + '\n' + paths[1] + '\n',
    )
    self.assertEqual(translated.returncode, 0, translated.stderr[-3000:])
    self.assertLen(translated.stdout.splitlines(), 2)
    self.assertEqual(sorted(os.listdir(plots)), ['000001.png', '000002.png'])
    with Image.open(os.path.join(plots, '000001.png')) as im:
      self.assertGreater(im.size[1], 50)


if __name__ == '__main__':
  absltest.main()
