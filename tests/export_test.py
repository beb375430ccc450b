"""Tests of s2s_jax.export and s2s_jax.exported: an artifact decodes exactly as its workdir does (text, audio and image
models; beam, greedy and sampling), its manifest, and damaged or mismatched artifacts failing with the file named.
The command-line round trip (export, then translate --exported in a fresh process importing no model code) is in the
slow tier."""

import glob
import json
import os
import shutil
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
import pytest
import shared_data
import testutil

from s2s_jax import decode
from s2s_jax import export
from s2s_jax import exported
from s2s_jax import inference
from s2s_jax import parallel
from s2s_jax.data import inputs as inputs_lib

sys.path.insert(0, testutil.ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.captioning import digits
from experiments.speech import yesno

# pylint: enable=g-import-not-at-top,wrong-import-position

_LINES = ['le 3 mars 1998', '12/31/2001', 'March 5, 1999', '7 juin 2012', '1.2.1987', 'x']


def _settings(function: str) -> dict:
  return {'beam': {}, 'greedy': {'beam_size': 1}, 'sample': {'sample': True}}[function]


def _assert_same_as_workdir(test, run, artifact, lines, functions=('beam', 'greedy', 'sample'), batch_size=4):
  """Every function of the artifact gives inference.Decoder's texts and scores (same settings, seed and batch)."""
  examples = [artifact.inputs.encode(line)[0] for line in lines]
  for a, b in zip(examples, [run.inputs.encode(line)[0] for line in lines]):
    np.testing.assert_array_equal(a, b)  # the artifact's frontend reads a line as the workdir's does
  keys = [inputs_lib.line_key(line) for line in lines]
  baked = artifact.manifest['decode']
  for function in functions:
    options = decode.options({**baked, 'sample': False}, run.config.data.max_tgt_len, **_settings(function))
    decoder = inference.Decoder(run.model, options, run.tgt_vocab, src_len=run.inputs.max_len, batch_size=batch_size)
    want = decoder(parallel.replicate(run.params), examples, seed=5, keys=keys)
    got = artifact.decode(examples, keys, function=function, batch_size=batch_size, seed=5)
    for line, w, g in zip(lines, want, got):
      test.assertEqual(g.texts, w.texts, f'{function}: {line}')
      test.assertEqual(g.scores, w.scores, f'{function}: {line}')
    test.assertGreater(len({tuple(g.scores) for g in got}), 1, f'{function}: the inputs are told apart')


class TextExportTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = cls.root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    wd = testutil.random_workdir(os.path.join(root, 'wd'), os.path.join(root, 'data'), seed=3)
    cls.run_ = inference.load(wd)
    options = decode.options(
      cls.run_.config.decode, cls.run_.config.data.max_tgt_len, beam_size=3, length_alpha=0.6, sample=True,
      num_samples=2, temperature=0.7,
    )  # fmt: skip
    cls.art = os.path.join(root, 'art')
    cls.manifest = export.export_run(cls.run_, options, cls.art, checkpoint='best', platforms=('cpu', 'cuda', 'tpu'))
    cls.artifact = exported.Artifact(cls.art)

  def _copy(self) -> str:
    path = os.path.join(self.create_tempdir().full_path, 'art')
    shutil.copytree(self.art, path)
    return path

  def test_beam_greedy_and_sampling_equal_the_workdir_decoder(self):
    _assert_same_as_workdir(self, self.run_, self.artifact, _LINES)
    self.assertEqual(self.artifact.hypotheses('beam'), 3)
    self.assertEqual(self.artifact.hypotheses('greedy'), 1)
    self.assertEqual(self.artifact.hypotheses('sample'), 2)

  def test_batch_size_does_not_change_a_line(self):
    examples = [self.artifact.inputs.encode(line)[0] for line in _LINES]
    keys = [inputs_lib.line_key(line) for line in _LINES]
    for function in ('beam', 'sample'):
      one = self.artifact.decode(examples, keys, function=function, batch_size=1, seed=2)
      many = self.artifact.decode(examples, keys, function=function, batch_size=7, seed=2)
      self.assertEqual([h.texts for h in one], [h.texts for h in many])

  def test_manifest_records_settings_shapes_platforms_and_hashes(self):
    m = self.manifest
    self.assertEqual(m['format'], exported.FORMAT)
    self.assertEqual(m['platforms'], ['cpu', 'cuda', 'tpu'])  # lowered for all three from this CPU machine
    self.assertEqual(m['functions']['beam']['inputs'], ['int32[b,s]', 'int32[b,s]'])  # batch, source length symbolic
    self.assertEqual(m['functions']['sample']['inputs'][-1], 'uint32[b,2]')
    self.assertEqual(m['functions']['beam']['decode']['beam_size'], 3)
    self.assertEqual(m['functions']['greedy']['decode']['beam_size'], 1)
    self.assertEqual(m['functions']['sample']['decode']['temperature'], 0.7)
    self.assertEqual(m['default_function'], 'sample')
    self.assertEqual((m['source']['checkpoint'], m['source']['step']), ('best', 1))
    self.assertEqual(m['model']['hidden_dim'], self.run_.config.model.hidden_dim)
    on_disk = sorted(os.listdir(self.art))
    self.assertEqual(sorted([*m['files'], exported.MANIFEST]), on_disk)
    leaves = exported._params(self.art, m['params'])  # pylint: disable=protected-access
    import jax  # pylint: disable=g-import-not-at-top

    for got, want in zip(leaves, jax.tree_util.tree_leaves(self.run_.params)):
      np.testing.assert_array_equal(got, np.asarray(want))

  def test_a_damaged_or_missing_file_is_named(self):
    path = self._copy()
    with open(os.path.join(path, 'params.bin'), 'r+b') as f:
      f.seek(100)
      byte = f.read(1)
      f.seek(100)
      f.write(bytes([byte[0] ^ 1]))
    with self.assertRaisesRegex(ValueError, r'params\.bin does not match its sha256 in .*manifest\.json'):
      exported.Artifact(path)
    path = self._copy()
    os.remove(os.path.join(path, 'greedy.jax'))
    with self.assertRaisesRegex(ValueError, r'greedy\.jax is missing .*export the run again'):
      exported.Artifact(path)
    with self.assertRaisesRegex(ValueError, r'manifest\.json does not exist; give a folder written by s2s_jax\.export'):
      exported.Artifact(self.create_tempdir().full_path)

  def test_a_manifest_of_another_format_or_an_unreadable_serialisation_is_refused(self):
    path = self._copy()
    where = os.path.join(path, exported.MANIFEST)
    with open(where, encoding='utf-8') as f:
      manifest = json.load(f)
    with open(where, 'w', encoding='utf-8') as f:
      json.dump({**manifest, 'format': 's2s_jax.export/0'}, f)
    with self.assertRaisesRegex(ValueError, r"format 's2s_jax.export/0', but this version of s2s_jax reads"):
      exported.Artifact(path)
    manifest['functions']['beam']['calling_convention_version'] = 99
    with open(where, 'w', encoding='utf-8') as f:
      json.dump(manifest, f)
    with self.assertRaisesRegex(ValueError, r'beam\.jax: serialised with calling convention version 99; the installed'):
      exported.Artifact(path)
    manifest['functions']['beam']['calling_convention_version'] = self.manifest['functions']['beam'][
      'calling_convention_version'
    ]
    manifest['jax_version'] = '0.0.1'
    with open(where, 'w', encoding='utf-8') as f:
      json.dump(manifest, f)
    with self.assertLogs(level='WARNING') as logs:
      exported.Artifact(path)
    self.assertIn('was exported with JAX 0.0.1', '\n'.join(logs.output))

  def test_export_refuses_a_folder_in_use_and_attention(self):
    options = decode.options(self.run_.config.decode, self.run_.config.data.max_tgt_len)
    with self.assertRaisesRegex(ValueError, 'exists and is not empty'):
      export.export_run(self.run_, options, self.art)
    with self.assertRaisesRegex(ValueError, 'does not return attention'):
      export.export_run(
        self.run_, decode.options(self.run_.config.decode, 12, return_attention=True), self.create_tempdir().full_path
      )
    self.assertEmpty(glob.glob(os.path.join(self.root, '.export-*')))  # no temporary folder left behind

  def test_the_location_score_keeps_the_source_length_fixed(self):
    config = testutil.tiny_config('')
    config.model.update(attention='luong', attention_score='location')
    root = self.create_tempdir().full_path
    run = inference.load(testutil.random_workdir(os.path.join(root, 'wd'), os.path.join(root, 'data'), config=config))
    options = decode.options(run.config.decode, run.config.data.max_tgt_len, beam_size=2)
    manifest = export.export_run(run, options, os.path.join(root, 'art'))
    src_len = run.config.data.max_src_len
    self.assertEqual(manifest['functions']['beam']['inputs'], [f'int32[b,{src_len}]'] * 2)
    self.assertEqual(manifest['inputs']['src_len'], src_len)
    _assert_same_as_workdir(self, run, exported.Artifact(os.path.join(root, 'art')), _LINES[:3], ('beam',))


class FeatureExportTest(absltest.TestCase):
  """Audio frames and image columns: the artifact reads the file a line names as the workdir does."""

  def _export(self, config):
    root = self.create_tempdir().full_path
    run = inference.load(testutil.random_workdir(os.path.join(root, 'wd'), os.path.join(root, 'data'), config=config))
    options = decode.options(run.config.decode, run.config.data.max_tgt_len, beam_size=2, sample=True)
    export.export_run(run, options, os.path.join(root, 'art'))
    return root, run, exported.Artifact(os.path.join(root, 'art'))

  def test_an_image_model(self):
    root, run, artifact = self._export(digits.get_config('size=tiny'))
    self.assertRegex(artifact.manifest['functions']['beam']['inputs'][0], r'float32\[b,\d+,\d+\]')
    rng, paths = np.random.default_rng(0), []
    for i, size in enumerate([(40, 30), (24, 100), (8, 8)]):
      paths.append(os.path.join(root, f'{i}.png'))
      Image.fromarray(rng.integers(0, 256, size, np.uint8)).save(paths[-1])
    _assert_same_as_workdir(self, run, artifact, paths, batch_size=2)

  def test_an_audio_model(self):
    folder = shared_data.require(self, 'yesno')
    config = yesno.get_config('size=tiny')
    config.data.manual_dir = folder
    _, run, artifact = self._export(config)
    features = run.model.cfg.input_features
    stride = run.source.time_stride()
    self.assertGreater(stride, 1)  # frame subsampling: the symbolic length is a multiple of it
    self.assertEqual(artifact.manifest['functions']['beam']['inputs'][0], f'float32[b,{stride}*s,{features}]')
    paths = sorted(glob.glob(os.path.join(folder, 'waves_yesno', '*.wav')))[-3:]
    _assert_same_as_workdir(self, run, artifact, paths, batch_size=2)


@pytest.mark.slow
class CommandLineTest(absltest.TestCase):
  def test_export_then_translate_in_a_process_without_model_code(self):
    root = self.create_tempdir().full_path
    wd = testutil.random_workdir(os.path.join(root, 'wd'), os.path.join(root, 'data'))
    art = os.path.join(root, 'art')
    done = testutil.run('-m', 's2s_jax.export', f'--workdir={wd}', f'--out={art}', '--beam_size=3', '--sample')
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertIn('Exported', done.stderr)
    src = os.path.join(root, 'in.txt')
    with open(src, 'w', encoding='utf-8') as f:
      f.write('\n'.join(['le 3 mars 1998', '', *_LINES[1:]]) + '\n')
    flags_ = [f'--input={src}', '--n_best=2', '--print_scores']
    want = testutil.run('-m', 's2s_jax.translate', f'--workdir={wd}', '--beam_size=3', *flags_)
    self.assertEqual(want.returncode, 0, want.stderr[-3000:])
    # translate --exported, then the modules it imported: no flax, no model, decoder, encoder or training code.
    probe = (
      'import sys\nfrom absl import app\nfrom s2s_jax import translate\n'
      'try:\n  app.run(translate.main)\nexcept SystemExit as e:\n  assert not e.code, e.code\n'
      "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'optax', 'orbax') or m in "
      "('s2s_jax.models', 's2s_jax.decoder', 's2s_jax.encoders', 's2s_jax.train'))\n"
      "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    got = testutil.run('-c', probe, f'--exported={art}', '--exported_function=beam', *flags_)
    self.assertEqual(got.returncode, 0, got.stderr[-3000:])
    self.assertEqual(got.stdout, want.stdout)
    self.assertLen(got.stdout.splitlines(), 2 * len(_LINES) + 2)
    self.assertIn('HEAVY []', got.stderr)
    sampled = testutil.run('-m', 's2s_jax.translate', f'--exported={art}', f'--input={src}', '--seed=4')
    want = testutil.run('-m', 's2s_jax.translate', f'--workdir={wd}', f'--input={src}', '--seed=4', '--sample')
    self.assertEqual((sampled.returncode, sampled.stdout), (0, want.stdout), sampled.stderr[-2000:])
    for bad, message in (
      (['--beam_size=5'], r'--beam_size: an exported model decodes with the settings baked into .*beam_size=3'),
      ([f'--workdir={wd}'], 'Give either --workdir'),
      (['--exported_function=greedy', '--n_best=2'], '--n_best=2 must be between 1 and the exported beam size 1'),
    ):
      done = testutil.run('-m', 's2s_jax.translate', f'--exported={art}', f'--input={src}', *bad)
      self.assertNotEqual(done.returncode, 0)
      self.assertRegex(done.stderr, message)

  def test_the_decoding_benchmark_measures_both_paths(self):
    root = self.create_tempdir().full_path
    wd = testutil.random_workdir(os.path.join(root, 'wd'), os.path.join(root, 'data'))
    src = os.path.join(root, 'in.txt')
    with open(src, 'w', encoding='utf-8') as f:
      f.write('\n'.join(_LINES) + '\n')
    out = os.path.join(root, 'decode.json')
    done = testutil.run(
      'scripts/benchmark_decode.py', f'--workdir={wd}', f'--source_file={src}', '--batch_sizes=1,4', '--rounds=1',
      '--cold_rounds=1', '--beam=2', f'--scratch={root}', f'--json={out}',
    )  # fmt: skip
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    with open(out, encoding='utf-8') as f:
      result = json.load(f)
    self.assertEqual(result['num_sentences'], len(_LINES))
    self.assertEqual([(r['beam'], r['batch_size']) for r in result['warm']], [(1, 1), (1, 4), (2, 1), (2, 4)])
    for row in result['warm']:
      for name in ('workdir', 'exported'):
        self.assertGreater(row[name]['sentences_per_s'], 0)
        self.assertLessEqual(row[name]['p50_ms'], row[name]['p99_ms'])
      self.assertGreater(row['exported_over_workdir'], 0)
    self.assertTrue(all(s > 0 for s in result['cold_start_s']['exported'] + result['cold_start_s']['workdir']))
    self.assertIn('| 2 | 4 | exported |', done.stdout)


if __name__ == '__main__':
  absltest.main()
