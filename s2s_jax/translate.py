"""Decodes raw input lines with a trained run.

  echo "le 3 mars 1998" | python -m s2s_jax.translate --workdir=/tmp/s2s_default
  python -m s2s_jax.translate --workdir=DIR --input=src.txt --output=hyp.txt --beam_size=5 --n_best=3 \
      --print_scores --attention_dir=/tmp/att

  python -m s2s_jax.translate --exported=ART [--exported_function=beam|greedy|sample] [--n_best --print_scores
      --batch_size --seed --input --output]

With --exported, an artifact written by `python -m s2s_jax.export` decodes with the settings baked into it (decode
flags, --workdir, --checkpoint and --attention_dir are errors); only jax, numpy and the tokenizer and frontend
modules are imported (s2s_jax/exported.py), and the output equals `translate --workdir` at the same settings.

One output line per input line (with --n_best=N, N consecutive lines, best first; --print_scores prefixes
`score<TAB>`). Empty input lines give empty output lines (score `nan`). Inputs longer than data.max_src_len are
truncated with a warning. For audio and image models each input line is a file path. With --attention_dir, the
best hypothesis' attention of input line i (counted from 1) goes to DIR/<i:06d>.png. Decoding defaults come from
the run's config.json.

A line's output does not depend on the other lines, their order or --batch_size. With --sample, each line's samples
are drawn from a key derived from --seed and the line's text (its file path for audio and image models), so the same
line gives the same samples in any file, at any position and in any batch, and identical lines give identical
samples. With several --workdir (an ensemble) each member reads the input its own way (data.reverse_source,
data.max_src_len, its frontend); the attention drawn is the first member's.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

from s2s_jax import compile_cache
from s2s_jax import decode
from s2s_jax import exported
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import raw_files

_WORKDIR = flags.DEFINE_multi_string(
  'workdir', None, 'A run directory written by s2s_jax.main; repeat it to decode with an ensemble.'
)
_EXPORTED = flags.DEFINE_string(
  'exported', None, 'An artifact folder written by s2s_jax.export (instead of --workdir): its baked-in settings.'
)
_EXPORTED_FUNCTION = flags.DEFINE_enum(
  'exported_function',
  None,
  ['beam', 'greedy', 'sample'],
  "With --exported: which exported search decodes (default: the artifact's own, beam unless exported with --sample).",
)
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', 'best', 'best, latest, a step number, avg:K, avg:S1,S2,... or a folder.'
)
_SEED = flags.DEFINE_integer(
  'seed',
  0,
  "With --sample: the random seed. A line's samples come from the seed and the line's text only: the same line gives "
  'the same samples at any position, in any batch and at any --batch_size (identical lines, identical samples).',
)
_N_BEST = flags.DEFINE_integer('n_best', 1, 'Hypotheses printed per input (at most the beam size).')
_PRINT_SCORES = flags.DEFINE_bool('print_scores', False, 'Prefix each output line with its score and a TAB.')
_INPUT = flags.DEFINE_string('input', '-', 'Input file (.gz accepted), or - for stdin.')
_OUTPUT = flags.DEFINE_string('output', '-', 'Output file, or - for stdout.')
_ATTENTION_DIR = flags.DEFINE_string('attention_dir', None, 'Write an attention heatmap per input line here.')
_DECODE_OVERRIDES = decode.define_flags(flags)
flags.register_multi_flags_validator(
  ['workdir', 'exported'],
  lambda v: (v['workdir'] is None) != (v['exported'] is None),
  message='Give either --workdir (repeatable) or --exported.',
)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir', compile_cache.default_dir(), compile_cache.FLAG_HELP
)


def _format(hyps: exported.Hypotheses | None, n_best: int, print_scores: bool) -> list[str]:
  if hyps is None:  # an empty input line
    return [('nan\t' if print_scores else '')] * n_best
  return [(f'{s:.6f}\t' if print_scores else '') + t for t, s in zip(hyps.texts[:n_best], hyps.scores[:n_best])]


def _write(out: list[str]) -> None:
  if _OUTPUT.value == '-':
    sys.stdout.write(''.join(line + '\n' for line in out))
  else:
    with open(_OUTPUT.value, 'w', encoding='utf-8') as f:
      f.writelines(line + '\n' for line in out)


def _encode(inputs: inputs_lib.InputKind, lines: list[str]) -> tuple[list, list[int]]:
  """The encoded non-empty lines and their line numbers (counted from 0)."""
  examples, where = [], []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      example, truncated = inputs.encode(line)
    except ValueError as e:  # e.g. an audio path that is missing or not audio
      raise app.UsageError(f'Input line {i + 1}: {e}') from e
    if truncated:
      logging.warning('Input line %d is longer than data.max_src_len=%s steps; truncated.', i + 1, inputs.max_len)
    examples.append(example)
    where.append(i)
  return examples, where


def _translate_exported() -> None:
  """Decodes with an artifact (s2s_jax/exported.py): no model code is imported."""
  overrides = _DECODE_OVERRIDES()
  batch_size = overrides.pop('batch_size', None)
  given = [f'--{name}' for name in sorted(overrides)]
  given += [f'--{name}' for name in ('checkpoint', 'attention_dir') if flags.FLAGS[name].present]
  try:
    artifact = exported.Artifact(_EXPORTED.value)
  except ValueError as e:
    sys.exit(f'Error: {e}')
  function = _EXPORTED_FUNCTION.value or artifact.manifest['default_function']
  if given:
    baked = artifact.manifest['functions'].get(function, {}).get('decode', artifact.manifest['decode'])
    settings = ', '.join(f'{k}={v}' for k, v in sorted(baked.items()) if k not in ('batch_size', 'return_attention'))
    raise app.UsageError(
      f'{", ".join(given)}: an exported model decodes with the settings baked into {_EXPORTED.value} ({function}: '
      f'{settings}); export the run again with other settings, or use --workdir.'
    )
  if function not in artifact.manifest['functions']:
    raise app.UsageError(
      f'--exported_function={function}: {_EXPORTED.value} holds {sorted(artifact.manifest["functions"])} '
      '(export with --sample for sampling).'
    )
  hypotheses = artifact.hypotheses(function)
  n_best = hypotheses if function == 'sample' else _N_BEST.value
  if not 1 <= n_best <= hypotheses:
    raise app.UsageError(f'--n_best={n_best} must be between 1 and the exported beam size {hypotheses}.')
  lines = raw_files.read_lines(_INPUT.value)
  examples, where = _encode(artifact.inputs, lines)
  keys = [inputs_lib.line_key(lines[i]) for i in where]
  results = artifact.decode(examples, keys, function=function, batch_size=batch_size, seed=_SEED.value)
  by_line = dict(zip(where, results))
  _write([text for i in range(len(lines)) for text in _format(by_line.get(i), n_best, _PRINT_SCORES.value)])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  compile_cache.enable(_COMPILATION_CACHE_DIR.value)
  if _EXPORTED.value:
    _translate_exported()
  else:
    _translate_workdir()


def _translate_workdir() -> None:
  """Decodes with one run or an ensemble of runs (their workdirs)."""
  # The model code is imported here only: the --exported path runs without flax and the model modules.
  from s2s_jax import attention as attention_lib  # pylint: disable=g-import-not-at-top
  from s2s_jax import inference  # pylint: disable=g-import-not-at-top
  from s2s_jax import parallel  # pylint: disable=g-import-not-at-top
  from s2s_jax import plots  # pylint: disable=g-import-not-at-top

  try:
    runs = inference.load_all(_WORKDIR.value, _CHECKPOINT.value)
    inputs = inference.ensemble_inputs(runs)
  except ValueError as e:  # one line naming what to fix (no usage text)
    sys.exit(f'Error: {e}')
  run = runs[0]  # the first run's config and decode settings (each member reads the inputs its own way)
  overrides = _DECODE_OVERRIDES()
  wants_attention = _ATTENTION_DIR.value is not None
  if wants_attention and run.config.model.attention in attention_lib.NO_ATTENTION:
    raise app.UsageError(f'--attention_dir: model.attention={run.config.model.attention!r} has no attention.')
  options = decode.options(
    run.config.decode, run.config.data.max_tgt_len, return_attention=wants_attention, **overrides
  )
  if (options.sample or options.mbr != 'none') and wants_attention:
    raise app.UsageError(
      '--attention_dir draws the attention of beam search; it does not combine with --sample or --mbr.'
    )
  if options.mbr != 'none':  # the candidates, best expected utility first
    n_best = _N_BEST.value
    if not 1 <= n_best <= options.mbr_candidates:
      raise app.UsageError(f'--n_best={n_best} must be between 1 and --mbr_candidates={options.mbr_candidates}.')
  elif options.sample:
    n_best = options.num_samples  # every sample, in sample order
  elif not 1 <= _N_BEST.value <= options.beam_size:
    raise app.UsageError(f'--n_best={_N_BEST.value} must be between 1 and the beam size {options.beam_size}.')
  else:
    n_best = _N_BEST.value
  lines = raw_files.read_lines(_INPUT.value)
  examples, where = _encode(inputs, lines)
  model, params = inference.ensemble(runs)
  decoder = inference.Decoder(model, options, run.tgt_vocab, src_len=inputs.max_len, batch_size=options.batch_size)
  memory_len = lambda x: len(run.memory_labels(inference.first_member(x)))
  keys = [inputs_lib.line_key(lines[i]) for i in where]
  results = decoder(parallel.replicate(params), examples, memory_len, seed=_SEED.value, keys=keys) if examples else []
  by_line = dict(zip(where, results))
  _write([text for i in range(len(lines)) for text in _format(by_line.get(i), n_best, _PRINT_SCORES.value)])
  if wants_attention:
    os.makedirs(_ATTENTION_DIR.value, exist_ok=True)
    for i, example, hyps in zip(where, (inference.first_member(x) for x in examples), results):
      if run.frontend.source_kind == 'image':  # per-token overlays on the image
        plots.save_attention_overlay(
          os.path.join(_ATTENTION_DIR.value, f'{i + 1:06d}.png'),
          run.inputs.pixels(example),
          np.asarray(hyps.attention[0]),
          run.source.grid_shape(len(example)),
          hyps.tokens[0],
          title=f'line {i + 1}: {hyps.texts[0]}',
        )
        continue
      plots.save_attention_heatmap(
        os.path.join(_ATTENTION_DIR.value, f'{i + 1:06d}.png'),
        np.asarray(hyps.attention[0]),
        run.memory_labels(example),
        hyps.tokens[0],
        title=f'line {i + 1}: {hyps.texts[0]}',
      )


if __name__ == '__main__':
  app.run(main)
