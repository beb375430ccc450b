"""Host-side evaluation: validation during training, the final test evaluation, and the shared scoring.

Loss metrics run over the whole split; decoded metrics (beam search, `config.decode`) over a bounded sample during
training and over the whole split at the end. Results go to metrics.jsonl (`eval/*`, `test/*`) and, for the final
evaluation, to `eval_<split>.json` and `eval_<split>.hyp.txt` (CONVENTIONS §5). `python -m s2s_jax.evaluate`
writes the same files through `score` and `write_eval`, named by `settings_tag` so that an evaluation with other
settings never replaces the run's own; every eval JSON records its settings (`settings_record`).
"""

from collections.abc import Mapping
from collections.abc import Sequence
import functools
import json
import math
import os
import re
import time
from typing import Any

from absl import logging
import jax

from s2s_jax import checkpointing
from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import fileio
from s2s_jax import inference
from s2s_jax import metrics as metrics_lib
from s2s_jax import parallel
from s2s_jax import steps
from s2s_jax.data import batches
from s2s_jax.data import pipeline

# Scalars of an evaluation that also go to metrics.jsonl as test/<name>: the metrics, word-level perplexity, the
# length ratio and the decoding speed.
REPORTED = metrics_lib.METRICS + ('word_perplexity', 'len_ratio', 'decode_s', 'sentences_per_s')


def score(
  hyps: Sequence[str],
  refs: Sequence[Sequence[str]],
  src_lengths: Sequence[int],
  groups: str,
  options: decode.DecodeOptions,
  seconds: float,
  step: int,
  lang: str = '',
) -> dict[str, Any]:
  """Every decoded score of CONVENTIONS §5 for one evaluation (`groups` as in eval.scores; `lang`: target)."""
  result = metrics_lib.text_scores(hyps, refs, [g for g in groups.split(',') if g], lang)
  result['bleu_by_src_len'] = metrics_lib.bleu_by_length(hyps, refs, src_lengths)
  if 'exact_match' in groups:
    result['exact_match_by_src_len'] = metrics_lib.exact_match_by_length(hyps, refs, src_lengths)
  result.update(
    decode_s=seconds,
    sentences_per_s=len(hyps) / max(seconds, 1e-9),
    num_sentences=len(hyps),
    beam_size=options.beam_size,
    length_alpha=options.length_alpha,
    checkpoint_step=step,
  )
  return result


# The name-tag of each decoding setting that changes hypotheses (batch_size does not: decoding is batch-invariant).
_TAGS = {
  'beam_size': 'beam',
  'length_alpha': 'alpha',
  'max_len': 'maxlen',
  'max_len_a': 'maxlena',
  'max_len_b': 'maxlenb',
  'min_len': 'minlen',
  'no_repeat_ngram_size': 'norepeat',
  'coverage_beta': 'cov',
  'sample': 'sample',
  'num_samples': 'samples',
  'temperature': 'temp',
  'top_k': 'topk',
  'top_p': 'topp',
  'epsilon': 'eps',
  'mbr': 'mbr',
  'mbr_candidates': 'mbrn',
  'mbr_source': 'mbrfrom',
}
_SAMPLING_ONLY = ('num_samples', 'temperature', 'top_k', 'top_p', 'epsilon')
_MBR_ONLY = ('mbr_candidates', 'mbr_source')


def _checkpoint_tag(checkpoint: str, step: int, averaged: Sequence[int]) -> str:
  if checkpoint == 'best':
    return ''
  if checkpoint == 'latest' or checkpoint.isdigit():
    return f'step{step}'
  if checkpoint.startswith('avg:'):
    spec = checkpoint[len('avg:') :].strip()
    return f'avg{int(spec)}' if spec.isdigit() else 'avg' + '_'.join(str(s) for s in averaged)
  return re.sub(r'[^A-Za-z0-9_-]+', '_', os.path.basename(os.path.normpath(checkpoint))) or 'folder'


def settings_tag(
  checkpoint: str,
  step: int,
  averaged: Sequence[int],
  num_members: int,
  own: decode.DecodeOptions,
  options: decode.DecodeOptions,
  seed: int = 0,
) -> str:
  """How an evaluation differs from the training's own test evaluation (the best checkpoint, the run's decode
  settings `own`, one workdir): '' when it does not, else the differences joined by '.' in this order: the
  checkpoint (avg2, avg20_40, step400 for a step or latest, a folder's name), ensemble3, then every decoding setting
  that differs (beam10, alpha1, cov0.2, ...; with sampling: sample, its settings and seed3). batch_size is no
  difference: a hypothesis does not depend on its batch."""
  parts = [_checkpoint_tag(checkpoint, step, averaged)]
  parts.append(f'ensemble{num_members}' if num_members > 1 else '')
  for name, tag in _TAGS.items():
    value = getattr(options, name)
    if value == getattr(own, name) or (name in _SAMPLING_ONLY and not options.draws_samples):
      continue
    if name in _MBR_ONLY and options.mbr == 'none':
      continue
    if isinstance(value, bool):
      parts.append(tag if value else f'no{tag}')
    else:
      parts.append(f'{tag}{value:g}' if isinstance(value, float) else f'{tag}{value}')
  if options.draws_samples:
    parts.append(f'seed{seed}')
  return '.'.join(p for p in parts if p)


def settings_record(
  workdir: str,
  checkpoint: str,
  averaged: Sequence[int],
  members: Sequence[str],
  overrides: Mapping[str, Any],
  tag: str,
  seed: int | None = None,
) -> dict[str, Any]:
  """The keys of an eval JSON written into `workdir` that say what was evaluated (CONVENTIONS §5): the --checkpoint
  spec, the steps it averages ([] for one checkpoint), every workdir of the ensemble relative to `workdir` (['.'] for
  a single run: a copied or moved run still names itself), the decoding flags given (`decode_overrides`; {} for the
  run's own settings), the `settings_tag` ('' for the training's own test evaluation, which report.py checks) and,
  with sampling, the seed."""
  record = {
    'checkpoint': checkpoint,
    'averaged_steps': [int(s) for s in averaged],
    'ensemble_workdirs': [os.path.relpath(os.path.abspath(w), os.path.abspath(workdir)) for w in members],
    'decode_overrides': dict(overrides),
    'tag': tag,
  }
  if seed is not None:
    record['seed'] = seed
  return record


_SENTENCE_END = re.compile(r'(?<=[.!?])\s')


def first_sentence(text: str) -> str:
  """Text up to the first `.`, `!` or `?` followed by whitespace (all of it when there is none)."""
  return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def first_words(text: str, n: int) -> str:
  return ' '.join(text.split()[:n])


def lead_baselines(sources: Sequence[str], num_words: Sequence[int]) -> dict[str, list[str]]:
  """Summaries that copy the start of each source: lead_sentence and lead_<N> (the first N words)."""
  out = {'lead_sentence': [first_sentence(s) for s in sources]}
  out.update({f'lead_{n}': [first_words(s, n) for s in sources] for n in num_words})
  return out


def split_examples(runs: Sequence[inference.Run], inputs, data: pipeline.PreparedData, split: str) -> tuple[list, Any]:
  """(encoded sources, padded source length) of a split of `data` (the first run's prepared data) for `runs`. When
  the members of an ensemble read inputs differently (`inputs` is an inference.EnsembleInputs), an example is a
  tuple of each member's encoding from its own prepared data (its reverse_source, max_src_len, vocabulary or
  frontend) and the length a tuple too; members whose splits hold other references are refused (ValueError)."""
  if not isinstance(inputs, inference.EnsembleInputs):
    return data.splits[split].src_ids, data.src_len
  prepared, datas = {}, []
  for run in runs:
    key = json.dumps(config_lib.to_dict(run.config.data), sort_keys=True)
    if key not in prepared:
      prepared[key] = data if run is runs[0] else pipeline.prepare(run.config.data, vocab_dir=run.workdir)
    other = prepared[key].splits.get(split)
    if other is None or other.targets != data.splits[split].targets:
      raise ValueError(
        f'{run.workdir} and {runs[0].workdir} have different {split!r} splits (other data): an ensemble is scored '
        'on one split.'
      )
    datas.append(prepared[key])
  return list(zip(*[d.splits[split].src_ids for d in datas])), tuple(d.src_len for d in datas)


def write_eval(workdir: str, name: str, result: dict[str, Any], hyps: Sequence[str]) -> None:
  if jax.process_index() != 0:
    return
  # Both files are written in full to temporary names before either is renamed (the JSON last): an error or a kill
  # while writing leaves both previous files whole, and never a torn eval_<name>.json, which report.py and sweeps
  # read as the sign that the evaluation finished.
  with fileio.replacing(os.path.join(workdir, f'eval_{name}.json')) as json_file:
    with fileio.replacing(os.path.join(workdir, f'eval_{name}.hyp.txt')) as hyp_file:
      hyp_file.writelines(h + '\n' for h in hyps)
      json.dump(result, json_file, indent=2, ensure_ascii=False)


class Evaluator:
  """Compiled eval and decode steps for one model, data and config."""

  def __init__(self, model, data: pipeline.PreparedData, config):
    self.data, self.config = data, config
    self.p_eval_step = parallel.data_parallel(functools.partial(steps.eval_step, model=model))
    self.options = decode.options(config.decode, config.data.max_tgt_len)
    self.decoder = inference.Decoder(
      model, self.options, data.tgt_vocab, src_len=data.src_len, batch_size=config.data.eval_batch_size
    )

  def loss_sums(self, params, split: str) -> dict[str, float]:
    """Summed NLL, correct tokens and token count over a whole split (params replicated)."""
    total = None
    for batch, _ in batches.eval_batches(self.data, split, self.config.data.eval_batch_size):
      sums = parallel.unreplicate(self.p_eval_step(params, parallel.shard_batch(batch)))
      total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
    return {k: float(v) for k, v in jax.device_get(total).items()}

  def loss(self, params, split: str) -> dict[str, float]:
    """loss / perplexity / token_accuracy over a whole split (params replicated)."""
    return metrics_lib.finalize_token_sums(self.loss_sums(params, split))

  def decode(self, params, split: str, limit: int | None = None) -> tuple[list[str], float]:
    """The best hypothesis per example of a split (or of its first `limit`) and the seconds it took."""
    start = time.time()
    results = self.decoder(params, self.data.splits[split].src_ids[:limit])
    return [r.texts[0] for r in results], time.time() - start

  def validate(self, params, step: int, writer) -> dict[str, float]:
    """Validation loss on the whole split and decoded scores on a bounded sample; written as eval/*."""
    split = self.data.splits[self.config.data.eval_split]
    scalars = {f'eval/{k}': v for k, v in self.loss(params, split.name).items()}
    hyps, _ = self.decode(params, split.name, self.config.eval.num_decode_examples)
    refs = [stream[: len(hyps)] for stream in split.reference_streams()]
    scores = metrics_lib.text_scores(hyps, refs, self.config.eval.scores.split(','), self.config.data.target_lang)
    scalars.update({f'eval/{k}': v for k, v in scores.items() if not k.endswith('signature')})
    writer.write_scalars(step, scalars)
    writer.write_texts(
      step,
      {
        'eval/samples': '\n\n'.join(
          f'src: {split.sources[i]}\nref: {refs[0][i]}\nhyp: {hyps[i]}'
          for i in range(min(self.config.eval.num_samples_to_log, len(hyps)))
        )
      },
    )
    return scalars

  def loss_metrics(self, params, split: str) -> dict[str, float]:
    """loss / perplexity / token_accuracy and, with data.target_lang, word_perplexity over a whole split."""
    sums = self.loss_sums(params, split)
    result = metrics_lib.finalize_token_sums(sums)
    if self.config.data.target_lang:  # per word, whatever the tokenizer: Moses tokens of the reference + EOS
      targets = self.data.splits[split].targets
      words = sum(len(x.split()) + 1 for x in metrics_lib.moses_lc(targets, self.config.data.target_lang))
      result['word_perplexity'] = math.exp(min(sums['loss_sum'] / max(words, 1), 100.0))
    return result

  def evaluate_split(self, params, split: str, step: int) -> tuple[dict[str, Any], list[str]]:
    """Loss and every decoded score of a whole split."""
    hyps, seconds = self.decode(params, split)
    data = self.data.splits[split]
    result = self.loss_metrics(params, split)
    result.update(
      score(
        hyps,
        data.reference_streams(),
        [len(ids) - 1 for ids in data.src_ids],
        self.config.eval.scores,
        self.options,
        seconds,
        step,
        self.config.data.target_lang,
      )
    )
    return result, hyps

  def test(self, workdir: str, step: int, writer) -> None:
    """Evaluates the best checkpoint on every test split; writes eval_<split>.json, hypotheses and test/*."""
    params, best_step = checkpointing.restore_params(workdir, 'best')
    logging.info('Testing the best checkpoint (step %d) of %s.', best_step, workdir)
    params = parallel.replicate(params)
    for split in filter(None, self.config.data.test_splits.split(',')):
      result, hyps = self.evaluate_split(params, split, best_step)
      result.update(settings_record(workdir, 'best', [], [workdir], {}, ''))
      writer.check()  # a run that lost its workdir lock writes nothing more
      write_eval(workdir, split, result, hyps)
      prefix = 'test' if split == 'test' else split
      writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in result.items() if k in REPORTED})
