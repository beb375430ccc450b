"""Exports a trained run as one self-contained folder: the encoder and search serialised with `jax.export`.

  python -m s2s_jax.export --workdir=DIR --out=ART [--checkpoint=best|latest|STEP|avg:K] [--beam_size=5 ...]
      [--sample --num_samples=4 --temperature=0.8 ...] [--platforms=cpu,cuda,tpu]
  python -m s2s_jax.translate --exported=ART < input.txt

The folder holds, each listed with its sha256 in `manifest.json`:
  beam.jax, greedy.jax (and sample.jax with --sample)  StableHLO of encoder + `lax.while_loop` search, from
      (parameter leaves, inputs, inputs_mask[, per-row keys]) to (token ids [B, K, T], scores [B, K]), with the
      batch and (except for image models and the location score) the source length symbolic
  params.bin                      every parameter leaf, raw little-endian bytes (dtypes and shapes in the manifest)
  vocab.src.json, vocab.tgt.json  the run's source-side frontend and target vocabulary, as in its workdir
  config.json                     the run's resolved config, for the record (the loader reads only the manifest)
  manifest.json                   decode settings, model config, checkpoint, JAX version, platforms, file hashes

The decode settings are baked in: the run's config.decode with the decode flags given here. Greedy is the same
settings with beam_size=1, as `translate --beam_size=1` decodes. Only `s2s_jax.exported` (jax, numpy and the
project's tokenizer and frontend modules) is needed to read it back.
"""

import dataclasses
import datetime
import os
import shutil
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from s2s_jax import attention as attention_lib
from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import exported
from s2s_jax import fileio
from s2s_jax import inference
from s2s_jax import provenance
from s2s_jax import steps


def _input_spec(run: inference.Run, b, s) -> jax.ShapeDtypeStruct:
  """The source batch: token ids [b, s], or float32 features [b, s, F] (audio frames, image columns)."""
  cfg = run.model.cfg
  if cfg.input_kind == 'tokens':
    return jax.ShapeDtypeStruct((b, s), jnp.int32)
  return jax.ShapeDtypeStruct((b, s, cfg.input_features), jnp.float32)


def source_length(run: inference.Run) -> tuple[int | None, str]:
  """(fixed source length or None for symbolic, why): image models read a fixed width and the location score
  needs a fixed maximum source length (CONVENTIONS §3); every other model takes any length up to max_src_len (a
  multiple of the encoder's time stride: frame subsampling and the pyramid halve time exactly)."""
  if run.frontend.source_kind == 'image':
    return run.inputs.max_len, 'image models read a fixed number of columns'
  if run.model.cfg.attention_score == 'location' and run.model.cfg.attention not in attention_lib.NO_ATTENTION:
    return run.inputs.max_len, 'the location score needs a fixed maximum source length'
  stride = run.source.time_stride()
  if run.inputs.max_len % stride:
    return run.inputs.max_len, f'max_src_len {run.inputs.max_len} is not a multiple of the time stride {stride}'
  return None, f'symbolic (a multiple of the time stride {stride})' if stride > 1 else 'symbolic'


def _function(run: inference.Run, options: decode.DecodeOptions, treedef, sample: bool):
  """(leaves, inputs, inputs_mask[, row_keys]) -> (seqs, scores): the run's encoder and search at `options`."""
  model = run.model

  def predict(leaves, inputs, inputs_mask, *row_keys):
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    batch = {'inputs': inputs, 'inputs_mask': inputs_mask}
    rng = row_keys[0] if sample else None
    return steps.predict_step(params, batch, rng, model=model, options=options)

  return predict


def _lower(fn, args, platforms: list[str]) -> tuple[jax_export.Exported, list[str]]:
  """jax.export of `fn` for every platform that lowers from here (cpu is required); (exported, platforms)."""
  try:
    return jax_export.export(jax.jit(fn), platforms=platforms)(*args), platforms
  except Exception as e:  # pylint: disable=broad-except  (fall back platform by platform)
    if platforms == ['cpu']:
      raise
    logging.warning('Lowering for %s at once failed (%s); trying one platform at a time.', platforms, e)
  kept = []
  for p in platforms:
    try:
      jax_export.export(jax.jit(fn), platforms=[p])(*args)
      kept.append(p)
    except Exception as e:  # pylint: disable=broad-except
      if p == 'cpu':
        raise
      logging.warning('Leaving out platform %s: %s', p, ' '.join(str(e).split())[:300])
  return jax_export.export(jax.jit(fn), platforms=kept)(*args), kept


def _export_all(run, variants, treedef, leaves, fixed, platforms) -> tuple[dict, list[str]]:
  """{name: Exported} of every variant with a symbolic batch and a symbolic (fixed=None) or fixed source length."""
  if fixed is None:  # a multiple of the encoder's time stride (frame subsampling, pyramid), so its halvings are exact
    b, k = jax_export.symbolic_shape('b, s')
    s = run.source.time_stride() * k
  else:
    b, s = jax_export.symbolic_shape('b')[0], fixed
  inputs, mask = _input_spec(run, b, s), jax.ShapeDtypeStruct((b, s), jnp.int32)
  leaf_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  out = {}
  for name, (opts, sample) in variants.items():
    args = [leaf_specs, inputs, mask] + ([jax.ShapeDtypeStruct((b, 2), jnp.uint32)] if sample else [])
    out[name], platforms = _lower(_function(run, opts, treedef, sample), args, platforms)
  return out, platforms


def export_run(
  run: inference.Run,
  options: decode.DecodeOptions,
  out: str,
  *,
  checkpoint: str = 'best',
  platforms: tuple[str, ...] = ('cpu',),
) -> dict:
  """Writes the artifact of `run` decoding with `options` into `out` (new or empty); returns its manifest.

  With options.sample, a sampling function is exported beside beam search and greedy (with the options' sampling
  settings); beam search and greedy always use the options' search settings (sample=False)."""
  if os.path.exists(out) and os.listdir(out):
    raise ValueError(f'--out={out} exists and is not empty; give a new folder.')
  if options.return_attention:
    raise ValueError('An exported artifact does not return attention.')
  if options.mbr != 'none':
    raise ValueError(
      f'decode.mbr={options.mbr!r}: MBR selection runs on the host, outside the exported search; export with '
      '--mbr=none (and --sample --num_samples=N to export the candidate sampler).'
    )
  platforms = [p.lower() for p in platforms]
  if 'cpu' not in platforms:
    platforms = ['cpu'] + platforms
  leaves, treedef = jax.tree_util.tree_flatten(jax.device_get(run.params))
  leaves = [np.asarray(x) for x in leaves]
  fixed, why = source_length(run)
  search = dataclasses.replace(options, sample=False)
  variants = {'beam': (search, False), 'greedy': (dataclasses.replace(search, beam_size=1), False)}
  if options.sample:
    variants['sample'] = (options, True)
  try:
    lowered, platforms = _export_all(run, variants, treedef, leaves, fixed, platforms)
  except Exception as e:  # pylint: disable=broad-except  (shape polymorphism cannot express every encoder)
    if fixed is not None:
      raise
    fixed = run.inputs.max_len
    why = f'a symbolic source length did not lower ({type(e).__name__}: {" ".join(str(e).split())[:200]})'
    logging.warning('Exporting with the source length fixed at %d: %s', fixed, why)
    lowered, platforms = _export_all(run, variants, treedef, leaves, fixed, platforms)
  tmp = fileio.make_temp_dir(os.path.dirname(os.path.abspath(out)), '.export-')  # renamed to `out` when whole
  try:
    functions = {}
    for name, (opts, sample) in variants.items():
      exp = lowered[name]
      with open(os.path.join(tmp, f'{name}.jax'), 'wb') as f:
        f.write(exp.serialize())
      functions[name] = {
        'file': f'{name}.jax',
        'hypotheses': opts.num_samples if sample else opts.beam_size,
        'decode': dataclasses.asdict(opts),
        'calling_convention_version': exp.calling_convention_version,
        'platforms': list(exp.platforms),
        'inputs': [str(a) for a in exp.in_avals[len(leaves) :]],
      }
    params_layout = []
    with open(os.path.join(tmp, 'params.bin'), 'wb') as f:
      for path, x in zip(_leaf_names(run.params), leaves):
        params_layout.append({'name': path, 'dtype': x.dtype.name, 'shape': list(x.shape), 'offset': f.tell()})
        f.write(np.ascontiguousarray(x).astype(x.dtype.newbyteorder('<')).tobytes())
    for name in ('vocab.src.json', 'vocab.tgt.json', 'config.json'):
      shutil.copyfile(os.path.join(run.workdir, name), os.path.join(tmp, name))
    config = run.config
    manifest = {
      'format': exported.FORMAT,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'jax_version': jax.__version__,
      'platforms': platforms,
      'source': {
        'workdir': os.path.abspath(run.workdir),
        'checkpoint': checkpoint,
        'step': run.step,
        'git_sha': provenance.git_sha(),
      },
      'decode': dataclasses.asdict(options),
      'default_function': 'sample' if options.sample else 'beam',
      'functions': functions,
      'inputs': {
        'source_kind': run.frontend.source_kind,
        'max_src_len': run.inputs.max_len,
        'reverse_source': bool(config.data.reverse_source),
        'src_len': fixed,
        'src_len_reason': why,
        'batch_size': options.batch_size,
      },
      'model': config_lib.to_dict(config.model),
      'params': params_layout,
    }
    manifest['files'] = {name: fileio.sha256_file(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))}
    fileio.write_json(os.path.join(tmp, exported.MANIFEST), manifest, indent=2, sort_keys=True)
    if os.path.isdir(out):
      os.rmdir(out)
    if not fileio.commit_dir(tmp, out):
      raise ValueError(f'--out={out}: another process wrote it meanwhile.')
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return manifest


def _leaf_names(params) -> list[str]:
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  return ['/'.join(str(getattr(k, 'key', k)) for k in path) for path in paths]


def _define_flags():
  """The command line (defined only when this module runs, so scripts can import export_run)."""
  workdir = flags.DEFINE_string('workdir', None, 'A run directory written by s2s_jax.main.')
  out = flags.DEFINE_string('out', None, 'The artifact folder to write (must not exist, or be empty).')
  checkpoint = flags.DEFINE_string(
    'checkpoint', 'best', 'best, latest, a step number, avg:K, avg:S1,S2,... or a folder.'
  )
  platforms = flags.DEFINE_list(
    'platforms',
    ['cpu', 'cuda', 'tpu'],
    'Platforms to lower for (one artifact runs on each); a platform that cannot be lowered from this machine is '
    'left out with a warning, except cpu, which is required.',
  )
  overrides = decode.define_flags(flags)
  flags.mark_flags_as_required(['workdir', 'out'])
  return workdir, out, checkpoint, platforms, overrides


def main(argv, workdir, out, checkpoint, platforms, overrides):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    run = inference.load(workdir.value, checkpoint.value)
    options = decode.options(run.config.decode, run.config.data.max_tgt_len, **overrides())
    manifest = export_run(run, options, out.value, checkpoint=checkpoint.value, platforms=tuple(platforms.value))
  except ValueError as e:
    sys.exit(f'Error: {e}')
  size = sum(os.path.getsize(os.path.join(out.value, n)) for n in manifest['files'])
  logging.info(
    'Exported %s (step %d, %s) to %s: %s for %s, %.1f MB.',
    run.workdir,
    run.step,
    checkpoint.value,
    out.value,
    ', '.join(manifest['functions']),
    ', '.join(manifest['platforms']),
    size / 1e6,
  )


if __name__ == '__main__':
  _flags = _define_flags()
  app.run(lambda argv: main(argv, *_flags))
