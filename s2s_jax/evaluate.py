"""Scores a trained run on a named split or on any source / reference files.

  python -m s2s_jax.evaluate --workdir=/tmp/s2s_default --split=test --beam_size=5
  python -m s2s_jax.evaluate --workdir=DIR --source_file=test.de.gz --reference_file=test.en.gz \
      --reference_file=test2.en.gz --name=test2016

Writes DIR/eval_<name>.json (the keys of CONVENTIONS §5: sacreBLEU with its signature, lowercased BLEU, chrF with
its signature, exact match, BLEU per source-length bucket, length ratio, decode time, ...; ROUGE and WER/CER when
the run's eval.scores asks for them) and DIR/eval_<name>.hyp.txt. --name defaults to the split name or the source
file's stem. Decoding defaults come from the run's config.json.
"""

import json
import os
import time

from absl import app
from absl import flags
import flax

from s2s_jax import decode
from s2s_jax import evaluation
from s2s_jax import inference
from s2s_jax.data import raw_files
from s2s_jax.data import pipeline

_WORKDIR = flags.DEFINE_multi_string(
  'workdir', None, 'A run directory written by s2s_jax.main; repeat it to score an ensemble (written into the first).'
)
_SPLIT = flags.DEFINE_string('split', None, "A split of the run's dataset, e.g. test.")
_SOURCE = flags.DEFINE_string('source_file', None, 'Source sentences, one per line (.gz accepted).')
_REFERENCES = flags.DEFINE_multi_string('reference_file', [], 'References aligned with --source_file (repeatable).')
_NAME = flags.DEFINE_string('name', None, 'Output name: eval_<name>.json (default: the split or source file stem).')
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint', 'best', 'best, latest, a step number, avg:K, avg:S1,S2,... or a folder.'
)
_SEED = flags.DEFINE_integer('seed', 0, 'With --sample: the random seed.')
_DECODE = {
  name: {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool}[kind](name, None, help_text)
  for name, kind, help_text in decode.FLAGS
}
flags.mark_flag_as_required('workdir')


def _file_stem(path: str) -> str:
  name = os.path.basename(path)
  name = name[:-3] if name.endswith('.gz') else name
  return os.path.splitext(name)[0]


def _examples_and_refs(run: inference.Run):
  """(encoded sources, reference streams, padded source length, default name)."""
  if bool(_SPLIT.value) == bool(_SOURCE.value):
    raise app.UsageError('Give either --split or --source_file (with --reference_file).')
  if _SPLIT.value:
    data = pipeline.prepare(run.config.data, vocab_dir=run.workdir)
    if _SPLIT.value not in data.splits:
      raise app.UsageError(f'--split={_SPLIT.value!r} is not one of {sorted(data.splits)}.')
    split = data.splits[_SPLIT.value]
    return split.src_ids, split.reference_streams(), data.src_len, _SPLIT.value
  if not _REFERENCES.value:
    raise app.UsageError('--source_file needs at least one --reference_file.')
  sources = raw_files.read_lines(_SOURCE.value)
  refs = [raw_files.read_lines(path) for path in _REFERENCES.value]
  for path, ref in zip(_REFERENCES.value, refs):
    if len(ref) != len(sources):
      raise app.UsageError(f'{path} has {len(ref)} lines but {_SOURCE.value} has {len(sources)}; they must align.')
  return [run.inputs.encode(line)[0] for line in sources], refs, run.inputs.max_len, _file_stem(_SOURCE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    runs = inference.load_all(_WORKDIR.value, _CHECKPOINT.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  run = runs[0]  # the first run's data, decode settings and workdir (where the result is written)
  examples, refs, src_len, default_name = _examples_and_refs(run)
  overrides = {name: holder.value for name, holder in _DECODE.items()}
  options = decode.options(run.config.decode, run.config.data.max_tgt_len, **overrides)
  model, params = inference.ensemble(runs)
  decoder = inference.Decoder(model, options, run.tgt_vocab, src_len=src_len, batch_size=options.batch_size)
  params = flax.jax_utils.replicate(params)
  decoder(params, examples[: decoder.batch_size], run.inputs.collate)  # compile first: decode_s times decoding only
  start = time.time()
  hyps = [h.texts[0] for h in decoder(params, examples, run.inputs.collate, seed=_SEED.value)]
  seconds = time.time() - start
  result = evaluation.score(
    hyps,
    refs,
    [len(x) - 1 for x in examples],
    run.config.eval.scores,
    options,
    seconds,
    run.step,
    run.config.data.target_lang,
  )
  name = _NAME.value or (f'ensemble_{default_name}' if len(runs) > 1 else default_name)
  evaluation.write_eval(run.workdir, name, result, hyps)
  print(json.dumps({k: v for k, v in result.items() if k != 'bleu_by_src_len'}, indent=1))


if __name__ == '__main__':
  app.run(main)
