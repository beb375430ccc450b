"""Scores a trained run on a named split or on any source / reference files.

  python -m s2s_jax.evaluate --workdir=/tmp/s2s_default --split=test --beam_size=5
  python -m s2s_jax.evaluate --workdir=DIR --source_file=test.de.gz --reference_file=test.en.gz \
      --reference_file=test2.en.gz --name=test2016

Writes DIR/eval_<name>.json (the keys of CONVENTIONS §5: sacreBLEU with its signature, lowercased BLEU, chrF with
its signature, exact match, BLEU per source-length bucket, length ratio, decode time, ...; ROUGE and WER/CER when
the run's eval.scores asks for them; with --split and one workdir also the loss; and what was evaluated: the
checkpoint spec, the averaged steps, the ensemble's workdirs, the decoding flags given) and DIR/eval_<name>.hyp.txt.
Decoding defaults come from the run's config.json.

--name defaults to the split name (or the source file's stem) when every setting equals the training's own test
evaluation: the best checkpoint, the run's decode settings, one workdir. Otherwise it is `<split>.<tag>`, the tag
naming the difference (avg2, step400, beam10, ensemble3, avg2.beam10, ...), so that no evaluation replaces the run's
own eval_<split>.json unless --name says so. A source file whose stem is one of the run's test splits is named
`<stem>.file[.<tag>]`. An ensemble (--workdir repeated) is written into the first workdir; each member reads the
inputs its own way (data.reverse_source, data.max_src_len, its frontend).
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from s2s_jax import checkpointing
from s2s_jax import compile_cache
from s2s_jax import decode
from s2s_jax import evaluation
from s2s_jax import inference
from s2s_jax import parallel
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import pipeline
from s2s_jax.data import raw_files

_WORKDIR = flags.DEFINE_multi_string(
  'workdir', None, 'A run directory written by s2s_jax.main; repeat it to score an ensemble (written into the first).'
)
_SPLIT = flags.DEFINE_string('split', None, "A split of the run's dataset, e.g. test.")
_SOURCE = flags.DEFINE_string('source_file', None, 'Source sentences, one per line (.gz accepted).')
_REFERENCES = flags.DEFINE_multi_string('reference_file', [], 'References aligned with --source_file (repeatable).')
_NAME = flags.DEFINE_string(
  'name',
  None,
  "Output name: eval_<name>.json. Default: the split (or source file stem) with the training's own settings, else "
  '<split>.<tag> naming the difference (avg2, step400, beam10, ensemble3, ...); give the split name to replace the '
  "training's own result.",
)
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', 'best', 'best, latest, a step number, avg:K, avg:S1,S2,... or a folder.'
)
_SEED = flags.DEFINE_integer(
  'seed', 0, "With --sample: the random seed; each sentence's samples come from the seed and its source text."
)
_DECODE_OVERRIDES = decode.define_flags(flags)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir', compile_cache.default_dir(), compile_cache.FLAG_HELP
)
flags.mark_flag_as_required('workdir')


def _file_stem(path: str) -> str:
  name = os.path.basename(path)
  name = name[:-3] if name.endswith('.gz') else name
  return os.path.splitext(name)[0]


def _split_examples(runs: list[inference.Run], inputs):
  """(examples, references, padded source length, source texts, the first run's data) of --split."""
  data = pipeline.prepare(runs[0].config.data, vocab_dir=runs[0].workdir)
  if _SPLIT.value not in data.splits:
    raise app.UsageError(f'--split={_SPLIT.value!r} is not one of {sorted(data.splits)}.')
  split = data.splits[_SPLIT.value]
  try:
    examples, src_len = evaluation.split_examples(runs, inputs, data, _SPLIT.value)
  except ValueError as e:
    sys.exit(f'Error: {e}')
  return examples, split.reference_streams(), src_len, split.sources, data


def _file_examples(inputs):
  """(examples, references, padded source length, source lines) of --source_file and --reference_file."""
  if not _REFERENCES.value:
    raise app.UsageError('--source_file needs at least one --reference_file.')
  sources = raw_files.read_lines(_SOURCE.value)
  refs = [raw_files.read_lines(path) for path in _REFERENCES.value]
  for path, ref in zip(_REFERENCES.value, refs):
    if len(ref) != len(sources):
      raise app.UsageError(f'{path} has {len(ref)} lines but {_SOURCE.value} has {len(sources)}; they must align.')
  return [inputs.encode(line)[0] for line in sources], refs, inputs.max_len, sources


def _name(run: inference.Run, tag: str) -> str:
  """--name, or the split / source file stem followed by the tag of the settings (see the module docstring)."""
  if _NAME.value is not None:
    if not _NAME.value.strip() or '/' in _NAME.value or os.sep in _NAME.value or _NAME.value.startswith('.'):
      raise app.UsageError(f'--name={_NAME.value!r}: give a file name part (eval_<name>.json): no /, no dot first.')
    return _NAME.value
  if _SPLIT.value:
    return '.'.join(filter(None, [_SPLIT.value, tag]))
  stem = _file_stem(_SOURCE.value)
  own = stem in filter(None, run.config.data.test_splits.split(','))  # a name the training writes
  return '.'.join(filter(None, [stem, 'file' if own else '', tag]))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if bool(_SPLIT.value) == bool(_SOURCE.value):
    raise app.UsageError('Give either --split or --source_file (with --reference_file).')
  compile_cache.enable(_COMPILATION_CACHE_DIR.value)
  try:
    runs = inference.load_all(_WORKDIR.value, _CHECKPOINT.value)
    inputs = inference.ensemble_inputs(runs)
    averaged = checkpointing.averaged_steps(runs[0].workdir, _CHECKPOINT.value)
  except ValueError as e:  # one line naming what to fix (no usage text)
    sys.exit(f'Error: {e}')
  run = runs[0]  # the first run's data, decode settings and workdir (where the result is written)
  if _SPLIT.value:
    examples, refs, src_len, sources, data = _split_examples(runs, inputs)
  else:
    (examples, refs, src_len, sources), data = _file_examples(inputs), None
  overrides = _DECODE_OVERRIDES()
  own = decode.options(run.config.decode, run.config.data.max_tgt_len)
  try:
    options = decode.options(run.config.decode, run.config.data.max_tgt_len, **overrides)
  except ValueError as e:
    sys.exit(f'Error: {e}')
  tag = evaluation.settings_tag(_CHECKPOINT.value, run.step, averaged, len(runs), own, options, _SEED.value)
  name = _name(run, tag)
  model, params = inference.ensemble(runs)
  decoder = inference.Decoder(model, options, run.tgt_vocab, src_len=src_len, batch_size=options.batch_size)
  params = parallel.replicate(params)
  decoder(params, examples[: decoder.batch_size])  # compile first: decode_s times decoding only
  start = time.time()
  keys = [inputs_lib.line_key(s) for s in sources]
  hyps = [h.texts[0] for h in decoder(params, examples, seed=_SEED.value, keys=keys)]
  seconds = time.time() - start
  result = {}
  if data is not None and len(runs) == 1:  # as the training's own evaluation: the loss too
    result = evaluation.Evaluator(run.model, data, run.config).loss_metrics(params, _SPLIT.value)
  result.update(
    evaluation.score(
      hyps,
      refs,
      [len(inference.first_member(x)) - 1 for x in examples],
      run.config.eval.scores,
      options,
      seconds,
      run.step,
      run.config.data.target_lang,
    )
  )
  seed = _SEED.value if options.draws_samples else None
  members = _WORKDIR.value
  result.update(evaluation.settings_record(run.workdir, _CHECKPOINT.value, averaged, members, overrides, tag, seed))
  if tag and name in filter(None, run.config.data.test_splits.split(',')):
    logging.warning(
      "--name=%s: eval_%s.json, the training's own result, now holds an evaluation with other settings (%s); "
      'report.py leaves it out.',
      name,
      name,
      tag,
    )
  evaluation.write_eval(run.workdir, name, result, hyps)
  print(f'Wrote {os.path.join(run.workdir, f"eval_{name}.json")}', file=sys.stderr)
  print(json.dumps({k: v for k, v in result.items() if not k.endswith('_by_src_len')}, indent=1))


if __name__ == '__main__':
  app.run(main)
