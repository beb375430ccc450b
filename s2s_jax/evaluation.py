"""Host-side evaluation loops: validation during training and the final test evaluation of the best checkpoint.

Loss metrics run over the whole split; decoded metrics (beam search, `config.decode`) over a bounded sample during
training and over the whole split at the end. Results go to metrics.jsonl (`eval/*`, `test/*`) and, for the final
evaluation, to `eval_<split>.json` and `eval_<split>.hyp.txt` (CONVENTIONS §5).
"""
import functools
import json
import os
import time
from typing import Any

import flax
import jax

from s2s_jax import checkpointing
from s2s_jax import metrics as metrics_lib
from s2s_jax import steps
from s2s_jax.data import pipeline


class Evaluator:
  """Compiled eval/predict steps for one model, data and config."""

  def __init__(self, model, data: pipeline.TextData, config, writer):
    self.model, self.data, self.config, self.writer = model, data, config, writer
    self.p_eval_step = jax.pmap(functools.partial(steps.eval_step, model=model), axis_name='batch')
    self.p_predict = steps.make_predict_fn(model, config.decode, data.tgt_len)

  def loss(self, params, split: str) -> dict[str, float]:
    """loss / perplexity / token_accuracy over a whole split (params replicated)."""
    total = None
    for batch, _ in pipeline.eval_batches(self.data, split, self.config.data.eval_batch_size):
      sums = flax.jax_utils.unreplicate(self.p_eval_step(params, steps.shard_batch(batch)))
      total = sums if total is None else jax.tree.map(lambda a, b: a + b, total, sums)
    return metrics_lib.finalize_token_sums(jax.device_get(total))

  def decode(self, params, split: str, limit: int | None = None) -> tuple[list[str], list[float], float]:
    """Best hypothesis text and score per example of a split (or its first `limit`), and the seconds it took."""
    hyps, scores = [], []
    start = time.time()
    for batch, n in pipeline.eval_batches(self.data, split, self.config.data.eval_batch_size, limit):
      seqs, seq_scores = self.p_predict(params, steps.shard_batch(batch))
      seqs, seq_scores = jax.device_get((seqs, seq_scores))
      seqs = seqs.reshape((-1,) + seqs.shape[2:])[:n, 0]
      hyps.extend(self.data.tgt_vocab.decode(s) for s in seqs)
      scores.extend(seq_scores.reshape(-1, seq_scores.shape[-1])[:n, 0].tolist())
    return hyps, scores, time.time() - start

  def validate(self, params, step: int) -> dict[str, float]:
    """Validation loss on the whole split and decoded scores on a bounded sample; written as eval/*."""
    split = self.config.data.eval_split
    scalars = {f'eval/{k}': v for k, v in self.loss(params, split).items()}
    n = self.config.eval.num_decode_examples
    hyps, _, _ = self.decode(params, split, n)
    refs = [self.data.splits[split].targets[:len(hyps)]]
    scores = metrics_lib.text_scores(hyps, refs)
    scalars.update({f'eval/{k}': v for k, v in scores.items() if not k.endswith('signature')})
    self.writer.write_scalars(step, scalars)
    sources = self.data.splits[split].sources
    k = self.config.eval.num_samples_to_log
    self.writer.write_texts(step, {'eval/samples': '\n\n'.join(
        f'src: {sources[i]}\nref: {refs[0][i]}\nhyp: {hyps[i]}' for i in range(min(k, len(hyps))))})
    return scalars

  def evaluate_split(self, params, split: str, step: int) -> dict[str, Any]:
    """Full-split evaluation with every score of CONVENTIONS §5."""
    result: dict[str, Any] = dict(self.loss(params, split))
    hyps, _, seconds = self.decode(params, split)
    refs = [self.data.splits[split].targets]
    result.update(metrics_lib.text_scores(hyps, refs))
    src_lengths = [len(ids) - 1 for ids in self.data.splits[split].src_ids]
    result['bleu_by_src_len'] = metrics_lib.bleu_by_length(hyps, refs, src_lengths)
    result.update(decode_s=seconds, sentences_per_s=len(hyps) / max(seconds, 1e-9), num_sentences=len(hyps),
                  beam_size=self.config.decode.beam_size, length_alpha=self.config.decode.length_alpha,
                  checkpoint_step=step)
    return result, hyps

  def test(self, workdir: str, step: int) -> None:
    """Evaluates the best checkpoint on every test split; writes eval_<split>.json, hypotheses and test/*."""
    params, best_step = checkpointing.restore_params(workdir, 'best')
    params = flax.jax_utils.replicate(params)
    for split in filter(None, self.config.data.test_splits.split(',')):
      result, hyps = self.evaluate_split(params, split, best_step)
      write_eval(workdir, split, result, hyps)
      prefix = 'test' if split == 'test' else split
      self.writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in result.items()
                                       if isinstance(v, (int, float)) and k != 'checkpoint_step'
                                       and k in _REPORTED})


_REPORTED = ('loss', 'perplexity', 'token_accuracy', 'exact_match', 'bleu', 'bleu_lc', 'chrf', 'rouge1', 'rouge2',
             'rougeL', 'wer', 'cer', 'len_ratio', 'decode_s', 'sentences_per_s')


def write_eval(workdir: str, name: str, result: dict[str, Any], hyps: list[str]) -> None:
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, f'eval_{name}.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2, ensure_ascii=False)
  with open(os.path.join(workdir, f'eval_{name}.hyp.txt'), 'w', encoding='utf-8') as f:
    f.writelines(h + '\n' for h in hyps)
