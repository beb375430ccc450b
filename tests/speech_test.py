"""Speech: the log-mel frontend, the FSDD / yes-no / audio-folder builders (on real files the tests write, and on
the real corpora), the frame encoder (subsampling, pyramid, SpecAugment), and tiny end-to-end runs (train, evaluate,
translate with attention plots)."""

import io
import json
import os
import subprocess
import sys
import tarfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shared_data
import soundfile
import testutil

from s2s_jax import encoders
from s2s_jax import models
from s2s_jax import rnn
from s2s_jax import seq2seq_config
from s2s_jax import train
from s2s_jax.data import audio
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import pipeline
from s2s_jax.data import speech
from s2s_jax.data.datasets import fsdd as fsdd_spec
from s2s_jax.data.datasets import yesno as yesno_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments.speech import fsdd  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.speech import yesno  # pylint: disable=g-import-not-at-top,wrong-import-position

RATE = 8000


def _wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
  buf = io.BytesIO()
  soundfile.write(buf, samples, rate, format='WAV', subtype='PCM_16')
  return buf.getvalue()


class FrontendTest(parameterized.TestCase):
  def test_filterbank_triangles_peak_at_one_and_cover_the_band(self):
    bank = audio.mel_filterbank(40, 256, RATE)
    self.assertEqual(bank.shape, (129, 40))
    self.assertTrue(np.all(bank >= 0))
    self.assertTrue(np.all(bank.max(axis=0) > 0.5))  # every filter sees at least one FFT bin well
    self.assertTrue(np.all(bank.sum(axis=1)[3:-1] > 0))  # every bin above fmin is covered
    fine = audio.mel_filterbank(40, 4096, RATE)  # on a fine frequency grid each triangle peaks at 1
    np.testing.assert_allclose(fine.max(axis=0), 1.0, atol=0.05)

  @parameterized.parameters(200, 800, 3000)
  def test_a_tone_peaks_in_its_mel_bin(self, freq):
    t = np.arange(RATE) / RATE
    feats = audio.log_mel(0.5 * np.sin(2 * np.pi * freq * t), RATE, num_mel=40, normalize=False)
    bank = audio.mel_filterbank(40, 256, RATE)
    expected = int(np.argmax(bank[int(round(freq / (RATE / 2) * 128))]))
    self.assertLessEqual(abs(int(np.argmax(feats.mean(axis=0))) - expected), 1)

  @parameterized.parameters(1, 199, 200, 201, 8000, 12345)
  def test_frame_count_and_normalisation(self, num_samples):
    x = np.random.RandomState(num_samples).randint(-3000, 3000, num_samples).astype(np.int16)
    feats = audio.log_mel(x, RATE, num_mel=20)
    self.assertEqual(feats.shape, (audio.num_frames(num_samples, RATE), 20))
    self.assertEqual(feats.dtype, np.float32)
    if len(feats) > 10:
      np.testing.assert_allclose(feats.mean(axis=0), 0.0, atol=1e-4)
      np.testing.assert_allclose(feats.std(axis=0), 1.0, atol=1e-3)

  def test_int16_and_float_input_agree(self):
    x = (np.random.RandomState(0).randn(4000) * 3000).astype(np.int16)
    np.testing.assert_allclose(
      audio.log_mel(x, RATE, normalize=False),
      audio.log_mel(x.astype(np.float32) / 32768.0, RATE, normalize=False),
      atol=1e-4,
    )

  def test_a_float_wav_gives_the_same_features_in_training_and_at_inference(self):
    path = os.path.join(self.create_tempdir().full_path, 'float.wav')
    soundfile.write(path, (np.random.RandomState(1).randn(4000) * 0.1).astype(np.float32), RATE, subtype='FLOAT')
    with open(path, 'rb') as f:
      stored, _ = speech.int16(f.read(), path)  # what preparation stores
    frontend = audio.AudioFrontend(40, RATE)
    np.testing.assert_array_equal(frontend.encode(frontend.read(path)), frontend.encode(audio.Clip(path, stored, RATE)))

  def test_nan_samples_are_an_unreadable_file(self):
    path = os.path.join(self.create_tempdir().full_path, 'nan.wav')
    soundfile.write(path, np.array([0.1, np.nan, 0.2] * 100, np.float32), RATE, subtype='FLOAT')
    with self.assertRaisesRegex(ValueError, 'nan.wav: the audio file has NaN or infinite samples'):
      audio.read_wav(path)

  def test_unreadable_and_wrong_rate_audio_fail_with_the_name(self):
    folder = self.create_tempdir().full_path
    bad = os.path.join(folder, 'bad.wav')
    with open(bad, 'wb') as f:
      f.write(b'RIFF not really a wave file')
    with self.assertRaisesRegex(ValueError, 'bad.wav: not a readable audio file'):
      audio.read_wav(bad)
    frontend = audio.AudioFrontend(40, RATE)
    with self.assertRaisesRegex(ValueError, 'x.wav: sample rate 16000 Hz, but this model reads 8000'):
      frontend.encode(audio.Clip('x.wav', np.zeros(1600, np.int16), 16000))


class FsddBuilderTest(absltest.TestCase):
  """A small archive in the FSDD layout whose recordings are constants identifying their split."""

  VALUE = {'train': 1000, 'validation': 2000, 'test_speaker': 3000, 'test_random': 4000}

  def setUp(self):
    super().setUp()
    self.raw = self.create_tempdir().full_path
    path = os.path.join(self.raw, fsdd_spec.FSDD_ARCHIVE)
    with tarfile.open(path, 'w:gz') as tar:
      for speaker in ('george', 'theo'):
        for digit in range(3):
          for index in range(14):
            value = self.VALUE[fsdd_spec.fsdd_split(speaker, index)]
            data = _wav_bytes(np.full(400 + 40 * digit, value, np.int16))
            info = tarfile.TarInfo(f'recordings/{digit}_{speaker}_{index}.wav')
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
      broken = b'not audio'
      info = tarfile.TarInfo('recordings/1_george_20.wav')
      info.size = len(broken)
      tar.addfile(info, io.BytesIO(broken))
    self.config = fsdd.get_config('size=tiny')
    self.config.data.update(
      manual_dir=self.raw, data_dir=self.create_tempdir().full_path, num_train_examples=30, num_eval_examples=6
    )
    pipeline.resolve_paths(self.config.data)

  def test_splits_use_only_their_own_recordings(self):
    clips, skipped = speech.load_clips(fsdd_spec.SPEC, self.config.data)
    self.assertEqual(
      {k: len(v) for k, v in clips.items()}, {'train': 30, 'validation': 6, 'test_speaker': 6, 'test_random': 6}
    )
    self.assertLen(skipped, 1)
    self.assertIn('1_george_20.wav', skipped[0])
    for split, rows in clips.items():
      for clip, text in rows:
        words = text.split()
        self.assertBetween(len(words), 1, 7)
        self.assertTrue(set(words) <= {'zero', 'one', 'two'})
        nonzero = np.unique(clip.samples[clip.samples != 0])
        np.testing.assert_array_equal(nonzero, [self.VALUE[split]], err_msg=f'{split} {clip.name}')
        self.assertEqual(clip.rate, RATE)
        self.assertTrue(clip.name.startswith(f'fsdd/{split}/'))

  def test_data_report_lists_skipped_files_and_frames(self):
    data = pipeline.prepare(self.config.data)
    self.assertEqual(data.report['skipped_audio']['count'], 1)
    self.assertEqual(data.splits['train'].src_ids[0].shape[1], 40)
    self.assertEqual(data.frontend, audio.AudioFrontend(40, RATE))
    self.assertEqual(set(data.tgt_vocab.tokens[4:]), {'zero', 'one', 'two'})
    self.assertEqual(data.report['src_vocab_size'], 0)

  def test_missing_archive_names_the_folder(self):
    self.config.data.manual_dir = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError, r'recordings.tar.gz.*data.manual_dir'):
      speech.load_clips(fsdd_spec.SPEC, self.config.data)


class RealSpeechDataTest(absltest.TestCase):
  def test_fsdd_speaker_theo_only_in_test_speaker(self):
    shared_data.require(self, 'fsdd', fsdd_spec.FSDD_ARCHIVE)
    with tarfile.open(os.path.join(shared_data.require(self, 'fsdd'), fsdd_spec.FSDD_ARCHIVE)) as tar:
      names = [os.path.basename(m.name)[:-4].split('_') for m in tar if m.name.endswith('.wav')]
    self.assertLen(names, 3000)
    splits = {s: [n for n in names if fsdd_spec.fsdd_split(n[1], int(n[2])) == s] for s in fsdd_spec.FSDD_SPLITS}
    self.assertEqual(
      {s: len(v) for s, v in splits.items()},
      {'train': 2000, 'validation': 250, 'test_speaker': 500, 'test_random': 250},
    )
    self.assertTrue(all(n[1] == 'theo' for n in splits['test_speaker']))
    self.assertFalse(any(n[1] == 'theo' for s in ('train', 'validation', 'test_random') for n in splits[s]))

  def test_yesno_splits_and_transcripts(self):
    shared_data.require(self, 'yesno', yesno_spec.YESNO_FOLDER)
    config = yesno.get_config('size=tiny')
    config.data.data_dir = self.create_tempdir().full_path
    pipeline.resolve_paths(config.data)
    clips, skipped = speech.load_clips(yesno_spec.SPEC, config.data)
    self.assertEqual((len(clips['train']), len(clips['test']), skipped), (40, 20, []))
    names = [os.path.basename(c.name) for c, _ in clips['train'] + clips['test']]
    self.assertEqual(names, sorted(names))
    clip, text = clips['test'][0]
    self.assertEqual(text, yesno_spec.yesno_transcript(os.path.basename(clip.name)))
    self.assertLen(text.split(), 8)
    self.assertEqual(yesno_spec.yesno_transcript('1_0_1.wav'), 'yes no yes')
    with self.assertRaisesRegex(ValueError, 'must be 0/1 labels'):
      yesno_spec.yesno_transcript('README.wav')


class AudioFolderTest(absltest.TestCase):
  def _folder(self, rates=(RATE, RATE, RATE)):
    folder = self.create_tempdir().full_path
    lines = []
    for i, rate in enumerate(rates):
      name = f'clip{i}.wav'
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(_wav_bytes(np.sin(np.arange(3000) * (i + 1) / 10) * 0.3, rate))
      lines.append(f'{name}\tword{i} word')
    with open(os.path.join(folder, 'broken.wav'), 'wb') as f:
      f.write(b'\x00' * 10)
    lines.append('broken.wav\tnothing')
    with open(os.path.join(folder, 'list.tsv'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
    with open(os.path.join(folder, 'test.tsv'), 'w') as f:
      f.write('\n'.join(lines[:-1]) + '\n')  # the readable files only
    config = yesno.get_config('size=tiny')
    config.data.update(
      name='audio_folder',
      files=f'train={folder}/list.tsv;test={folder}/test.tsv',
      data_dir=self.create_tempdir().full_path,
      eval_split='train',
    )
    pipeline.resolve_paths(config.data)
    return config

  def test_reads_tsv_and_counts_unreadable_files(self):
    data = pipeline.prepare(self._folder().data)
    self.assertLen(data.splits['train'], 3)
    self.assertEqual(data.splits['train'].targets[1], 'word1 word')
    self.assertEqual(data.report['skipped_audio']['count'], 1)
    self.assertIn('broken.wav', data.report['skipped_audio']['files'][0])

  def test_an_unreadable_file_in_an_evaluation_split_fails(self):
    config = self._folder()
    config.data.files = config.data.files.replace('test.tsv', 'list.tsv')
    with self.assertRaisesRegex(
      ValueError,
      r"broken.wav: .* listed in the 'test' split, whose examples are never "
      'dropped',
    ):
      pipeline.prepare(config.data)

  def test_mixed_sample_rates_fail(self):
    with self.assertRaisesRegex(ValueError, 'one dataset needs one sample rate'):
      pipeline.prepare(self._folder(rates=(RATE, 16000, RATE)).data)


class FrameEncoderTest(parameterized.TestCase):
  def test_halve_time_and_pyramid_mask(self):
    x = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    y, m = rnn.halve_time(x, mask)
    self.assertEqual(y.shape, (2, 3, 6))
    np.testing.assert_array_equal(y[0, 0], jnp.concatenate([x[0, 0], x[0, 1]]))
    np.testing.assert_array_equal(y[0, 2, 3:], 0.0)  # the odd last step is paired with a zero step
    np.testing.assert_array_equal(m, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(rnn.pyramid_mask(jnp.ones((1, 9)), 3), jnp.ones((1, 3)))

  def test_spec_augment_masks_bands_within_the_utterance(self):
    x = jnp.ones((64, 50, 20))
    lengths = jnp.arange(64) % 40 + 10
    mask = (jnp.arange(50)[None] < lengths[:, None]).astype(jnp.int32)
    y = encoders.spec_augment(jax.random.PRNGKey(0), x, mask, num_masks=2, freq_width=4, time_width=30)
    zero = np.asarray(y == 0)
    freq_zero = zero.all(axis=1)  # bins zero at every frame
    time_zero = zero.all(axis=2)  # frames zero in every bin
    self.assertTrue(np.all(freq_zero.sum(axis=1) <= 8))
    self.assertTrue(freq_zero.any())
    for b in range(64):
      self.assertLessEqual(time_zero[b].sum(), 2 * (int(lengths[b]) // 5))
      self.assertFalse(time_zero[b, int(lengths[b]) :].any())  # time bands lie inside the utterance
    np.testing.assert_array_equal(np.asarray(y)[~zero], 1.0)
    self.assertTrue(np.all(zero == (freq_zero[:, None, :] | time_zero[:, :, None])))

  @parameterized.parameters((1, False, 24), (4, False, 6), (2, True, 6), (4, True, 3))
  def test_memory_length_follows_stride_and_pyramid(self, stride, pyramid, steps):
    cfg = seq2seq_config.Seq2SeqConfig(
      input_kind='frames',
      input_features=8,
      tgt_vocab_size=9,
      frame_stride=stride,
      pyramid=pyramid,
      num_layers=2,
      bidirectional=True,
      bridge='dense',
      attention='luong',
      embed_dim=8,
      hidden_dim=8,
    )
    model = models.Seq2Seq(cfg)
    x = jnp.ones((2, 24, 8))
    mask = jnp.array([[1] * 24, [1] * 10 + [0] * 14])
    params = model.init(jax.random.PRNGKey(0), x, mask, jnp.ones((2, 4), jnp.int32))
    memory, _ = model.apply(params, x, mask, method=models.Seq2Seq.encode)
    self.assertEqual(memory['values'].shape[:2], (2, steps))
    factor = 24 // steps
    np.testing.assert_array_equal(memory['mask'][1], (np.arange(steps) * factor < 10).astype(np.int32))
    self.assertEqual(encoders.for_config(cfg).time_stride(), factor)
    labels = encoders.for_config(cfg).memory_labels(
      inputs_lib.AudioInputs(audio.AudioFrontend(8, RATE), 24).labels(np.zeros((10, 8)))
    )
    self.assertLen(labels, -(-10 // factor))
    logits = model.apply(
      params, x, mask, jnp.ones((2, 4), jnp.int32), train=True, rngs={'dropout': jax.random.PRNGKey(1)}
    )
    self.assertEqual(logits.shape, (2, 4, 9))

  def test_invalid_frame_options(self):
    with self.assertRaisesRegex(ValueError, 'frame_stride=3 is not one of'):
      seq2seq_config.Seq2SeqConfig(input_kind='frames', input_features=8, tgt_vocab_size=9, frame_stride=3).validate()
    with self.assertRaisesRegex(ValueError, 'apply to audio frames only'):
      seq2seq_config.Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=9, frame_stride=2).validate()
    with self.assertRaisesRegex(ValueError, 'pointer_generator copies source tokens'):
      seq2seq_config.Seq2SeqConfig(
        input_kind='frames',
        input_features=8,
        tgt_vocab_size=9,
        pointer_generator=True,
        attention='bahdanau',
        attention_score='additive',
      ).validate()


def _run(*args: str) -> subprocess.CompletedProcess:
  return testutil.run(*args)


class EndToEndTest(absltest.TestCase):
  @pytest.mark.slow  # about 45 s; the fast tier keeps the builders, frontend and encoder tests
  def test_yesno_trains_evaluates_and_transcribes_files(self):
    folder = shared_data.require(self, 'yesno', yesno_spec.YESNO_FOLDER)
    config = yesno.get_config('size=tiny')
    config.data.data_dir = self.create_tempdir().full_path
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, 'eval_test.json')) as f:
      result = json.load(f)
    self.assertEqual(result['num_sentences'], 20)
    self.assertBetween(result['wer'], 0.0, 200.0)
    with open(os.path.join(workdir, 'vocab.src.json')) as f:
      self.assertEqual(json.load(f)['kind'], 'audio')
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.wav'))[-2:]
    listing = os.path.join(self.create_tempdir().full_path, 'files.txt')
    with open(listing, 'w') as f:
      f.write(f'{files[0]}\n\n{files[1]}\n')
    plots = self.create_tempdir().full_path
    out = _run('-m', 's2s_jax.translate', f'--workdir={workdir}', f'--input={listing}', f'--attention_dir={plots}')
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    lines = out.stdout.splitlines()
    self.assertLen(lines, 3)
    self.assertEqual(lines[1], '')
    self.assertTrue(set(' '.join(lines).split()) <= {'yes', 'no'})
    self.assertEqual(sorted(os.listdir(plots)), ['000001.png', '000003.png'])
    refs = os.path.join(self.create_tempdir().full_path, 'refs.txt')
    with open(refs, 'w') as f:
      f.write(''.join(yesno_spec.yesno_transcript(os.path.basename(p)) + '\n' for p in files))
    with open(listing, 'w') as f:
      f.write(''.join(p + '\n' for p in files))
    evaluated = _run(
      '-m',
      's2s_jax.evaluate',
      f'--workdir={workdir}',
      f'--source_file={listing}',
      f'--reference_file={refs}',
      '--name=two_files',
    )
    self.assertEqual(evaluated.returncode, 0, evaluated.stderr[-3000:])
    with open(os.path.join(workdir, 'eval_two_files.json')) as f:
      self.assertEqual(json.load(f)['num_sentences'], 2)
    not_audio = os.path.join(self.create_tempdir().full_path, 'notes.wav')
    with open(not_audio, 'w') as f:
      f.write('plain text\n')
    with open(listing, 'w') as f:
      f.write(files[0] + '\n' + not_audio + '\n')
    bad = _run('-m', 's2s_jax.translate', f'--workdir={workdir}', f'--input={listing}')
    self.assertNotEqual(bad.returncode, 0)
    self.assertIn('Input line 2', bad.stderr)
    self.assertIn('not a readable audio file', bad.stderr)

  @pytest.mark.slow  # the yesno run above covers the same path in the fast tier
  def test_fsdd_tiny_trains_and_scores_both_test_splits(self):
    shared_data.require(self, 'fsdd', fsdd_spec.FSDD_ARCHIVE)
    config = fsdd.get_config('size=tiny')
    config.data.data_dir = self.create_tempdir().full_path
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    train.train_and_evaluate(config, workdir)
    for split in ('test_speaker', 'test_random'):
      with open(os.path.join(workdir, f'eval_{split}.json')) as f:
        result = json.load(f)
      self.assertEqual(result['num_sentences'], 16)
      self.assertIn('cer', result)


if __name__ == '__main__':
  absltest.main()
