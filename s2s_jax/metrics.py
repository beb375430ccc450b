"""Metrics: on-device token sums (divided on the host) and host-side scores of decoded text.

On device, everything is a sum plus a denominator (`loss_sum`, `correct_sum`, `num_tokens`), psum'ed over devices,
so means are exact with padding and any device count. Text scores use sacreBLEU (BLEU, lowercased BLEU, chrF, each
with its signature); percent-like scores are 0-100 (CONVENTIONS §5).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu

Metrics = dict[str, jax.Array]

# The metric names, defined once (eval.metric, eval.scores, the test/* records and tune's METRIC read them here).
LOSS_METRICS = ('loss', 'perplexity', 'token_accuracy')  # every evaluation's, from the token sums
# eval.scores' groups -> the decoded scores each adds (text_scores)
SCORE_GROUPS = {
  'exact_match': ('exact_match',),
  'bleu': ('bleu', 'bleu_lc'),
  'bleu_tok': ('bleu_tok',),
  'chrf': ('chrf',),
  'rouge': ('rouge1', 'rouge2', 'rougeL'),
  'wer': ('wer', 'cer'),
}
METRICS = LOSS_METRICS + tuple(name for group in SCORE_GROUPS.values() for name in group)  # what eval.metric may name


def weighted_xent(
  logits_BxTxV: jax.Array,
  targets_BxT: jax.Array,
  weights_BxT: jax.Array,
  label_smoothing: float | jax.Array = 0.0,
  label_confidence: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Returns (summed training loss with label smoothing, summed negative log-likelihood) over weighted tokens.

  `label_smoothing` is a Python float (0: none, no smoothing terms in the program) or an array (a runtime input of
  the train step), then with `label_confidence` = 1 - label_smoothing computed on the host."""
  logits = logits_BxTxV.astype(jnp.float32)
  if isinstance(label_smoothing, (int, float)):
    if not label_smoothing:
      loss, nll = token_xent(logits, targets_BxT)
      return (loss * weights_BxT).sum(), (nll * weights_BxT).sum()
    label_smoothing, label_confidence = jnp.float32(label_smoothing), jnp.float32(1.0 - label_smoothing)
  loss, nll = smoothed_token_xent(logits, targets_BxT, label_smoothing, label_confidence)
  return (loss * weights_BxT).sum(), (nll * weights_BxT).sum()


@jax.custom_vjp
def token_xent(logits_NxV: jax.Array, targets_N: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token (loss, NLL) of logits [..., V], both lse - x_y (no label smoothing; see smoothed_token_xent).

  The backward pass is one elementwise pass over the logits, g (softmax(x) - onehot(y)), with the softmax recomputed
  from the saved log-normaliser. Autodiff of log_softmax + take_along_axis also wrote a zero tensor of the logits'
  size and scattered into it (42 ms of a 1.18 s lstm512 train step in the XLA profile).
  """
  return _token_xent_fwd(logits_NxV, targets_N)[0]


def _token_xent_fwd(logits, targets):
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = lse - picked
  return (nll, nll), (logits, targets, lse)


def _token_xent_bwd(residuals, cotangents):
  logits, targets, lse = residuals
  g_loss, g_nll = cotangents
  probs = jnp.exp(logits - lse[..., None])
  onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
  g = g_loss + g_nll
  return g[..., None] * (probs - onehot), None


token_xent.defvjp(_token_xent_fwd, _token_xent_bwd)


@jax.custom_vjp
def smoothed_token_xent(
  logits_NxV: jax.Array, targets_N: jax.Array, smoothing: jax.Array, confidence: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Per-token (label-smoothed loss, NLL) of logits [..., V]: lse - (1 - e) x_y - e mean(x), and lse - x_y, with
  e = `smoothing` and 1 - e = `confidence` (arrays: runtime inputs; no gradient flows to them). The backward pass is
  token_xent's plus g_loss e (onehot - 1 / V)."""
  return _smoothed_fwd(logits_NxV, targets_N, smoothing, confidence)[0]


def _smoothed_fwd(logits, targets, smoothing, confidence):
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = lse - picked
  loss = lse - confidence * picked - smoothing * logits.mean(axis=-1)
  return (loss, nll), (logits, targets, lse, smoothing)


def _smoothed_bwd(residuals, cotangents):
  logits, targets, lse, smoothing = residuals
  g_loss, g_nll = cotangents
  probs = jnp.exp(logits - lse[..., None])
  onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
  g = g_loss + g_nll
  d = g[..., None] * (probs - onehot) + g_loss[..., None] * smoothing * (onehot - 1.0 / logits.shape[-1])
  return d, None, jnp.zeros_like(smoothing), jnp.zeros_like(smoothing)


smoothed_token_xent.defvjp(_smoothed_fwd, _smoothed_bwd)


def token_sums(nll_sum: jax.Array, logits_BxTxV: jax.Array, targets_BxT: jax.Array, weights_BxT: jax.Array) -> Metrics:
  # "the target's logit is the maximum": argmax without its index pass (a tie counts as correct)
  picked = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  correct = (picked >= logits_BxTxV.max(axis=-1)) * weights_BxT
  return {'loss_sum': nll_sum, 'correct_sum': correct.sum(), 'num_tokens': weights_BxT.sum()}


def finalize_token_sums(sums: dict[str, Any]) -> dict[str, float]:
  """loss (mean NLL per target token, EOS included), perplexity and token accuracy from summed metrics."""
  n = max(float(sums['num_tokens']), 1.0)
  loss = float(sums['loss_sum']) / n
  return {
    'loss': loss,
    'perplexity': float(np.exp(min(loss, 100.0))),
    'token_accuracy': 100.0 * float(sums['correct_sum']) / n,
  }


def exact_match(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
  """Percent of hypotheses equal (after stripping) to one of their references."""
  hits = sum(h.strip() in {r[i].strip() for r in refs} for i, h in enumerate(hyps))
  return 100.0 * hits / max(1, len(hyps))


def moses_lc(lines: Sequence[str], lang: str) -> list[str]:
  """Lowercased, punctuation-normalised, Moses-tokenised text (with Moses' escapes), as in the `tok/*.lc.norm.tok`
  files of Multi30k (checked: identical on all 1,000 English test2016 sentences)."""
  from sacremoses import MosesPunctNormalizer  # pylint: disable=g-import-not-at-top
  from sacremoses import MosesTokenizer  # pylint: disable=g-import-not-at-top

  normalizer, tokenizer = MosesPunctNormalizer(lang or 'en'), MosesTokenizer(lang or 'en')
  return [tokenizer.tokenize(normalizer.normalize(x.lower()), escape=True, return_str=True) for x in lines]


def text_scores(
  hyps: Sequence[str],
  refs: Sequence[Sequence[str]],
  groups: Sequence[str] = ('bleu', 'chrf', 'exact_match'),
  lang: str = '',
) -> dict[str, Any]:
  """Scores of decoded text; `refs` is a list of reference streams aligned with `hyps` (several allowed).

  groups: 'bleu' (sacreBLEU BLEU + signature, lowercased BLEU), 'bleu_tok' (BLEU with tokenize='none' on
  `moses_lc` hypotheses and references of language `lang`: the "tokenised lowercased BLEU" of many papers and
  tutorials), 'chrf' (+ signature), 'exact_match', 'rouge' (ROUGE-1/2/L F1), 'wer' (WER and CER against the first
  reference). The length ratio (hypothesis tokens over reference tokens, sacreBLEU's 13a tokenisation) is always
  there.
  """
  hyps, refs = list(hyps), [list(r) for r in refs]
  bleu = sacrebleu.metrics.BLEU()
  b = bleu.corpus_score(hyps, refs)
  out: dict[str, Any] = {'len_ratio': b.sys_len / max(1, b.ref_len)}
  if 'bleu' in groups:
    out.update(
      bleu=b.score,
      bleu_signature=str(bleu.get_signature()),
      bleu_lc=sacrebleu.metrics.BLEU(lowercase=True).corpus_score(hyps, refs).score,
    )
  if 'bleu_tok' in groups:
    tok_bleu = sacrebleu.metrics.BLEU(tokenize='none')
    out.update(
      bleu_tok=tok_bleu.corpus_score(moses_lc(hyps, lang), [moses_lc(r, lang) for r in refs]).score,
      bleu_tok_signature=str(tok_bleu.get_signature()),
    )
  if 'chrf' in groups:
    chrf = sacrebleu.metrics.CHRF()
    out.update(chrf=chrf.corpus_score(hyps, refs).score, chrf_signature=str(chrf.get_signature()))
  if 'exact_match' in groups:
    out['exact_match'] = exact_match(hyps, refs)
  if 'rouge' in groups:
    out.update(rouge(hyps, refs))
  if 'wer' in groups:
    out.update(error_rates(hyps, refs))
  return out


def rouge(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
  """ROUGE-1/2/L F1 (rouge-score, Porter stemming), 0-100.

  Each hypothesis is scored against each of its references; `rougeN` averages those scores over references (then
  over sentences), `rougeN_max` takes the best reference per sentence.
  """
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top

  names = ('rouge1', 'rouge2', 'rougeL')
  scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
  totals = {f'{n}{suffix}': 0.0 for n in names for suffix in ('', '_max')}
  for i, hyp in enumerate(hyps):
    per_ref = [scorer.score(r[i], hyp) for r in refs]
    for n in names:
      f1 = [s[n].fmeasure for s in per_ref]
      totals[n] += sum(f1) / len(f1)
      totals[f'{n}_max'] += max(f1)
  return {k: 100.0 * v / max(1, len(hyps)) for k, v in totals.items()}


def error_rates(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
  """Corpus WER (words) and CER (characters) of the hypotheses against the first reference (jiwer), 0-100+."""
  import jiwer  # pylint: disable=g-import-not-at-top

  return {
    'wer': 100.0 * jiwer.process_words(list(refs[0]), list(hyps)).wer,
    'cer': 100.0 * jiwer.process_characters(list(refs[0]), list(hyps)).cer,
  }


def scores_by_length(
  score, key: str, hyps: Sequence[str], refs: Sequence[Sequence[str]], src_lengths: Sequence[int], edges: Sequence[int]
) -> list[dict[str, Any]]:
  """`score(hyps, refs)` per source-length bucket [min_len, max_len] (source tokens, EOS excluded) as
  {min_len, max_len, n, key}; the last bucket ends at the longest source; empty buckets are omitted."""
  bounds = [0, *edges, max([*src_lengths, edges[-1]])]
  out = []
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    idx = [i for i, n in enumerate(src_lengths) if lo < n <= hi or (lo == 0 and n == 0)]
    if idx:
      out.append(
        {
          'min_len': lo + (lo > 0),
          'max_len': hi,
          'n': len(idx),
          key: score([hyps[i] for i in idx], [[r[i] for i in idx] for r in refs]),
        }
      )
  return out


def exact_match_by_length(
  hyps: Sequence[str],
  refs: Sequence[Sequence[str]],
  src_lengths: Sequence[int],
  edges: Sequence[int] = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
) -> list[dict[str, Any]]:
  """Exact match per source-length bucket (for tasks scored by exact match)."""
  return scores_by_length(exact_match, 'exact_match', hyps, refs, src_lengths, edges)


def bleu_by_length(
  hyps: Sequence[str],
  refs: Sequence[Sequence[str]],
  src_lengths: Sequence[int],
  edges: Sequence[int] = (10, 20, 30, 40, 50, 60),
) -> list[dict[str, Any]]:
  """Corpus BLEU per source-length bucket."""
  score = lambda h, r: sacrebleu.metrics.BLEU().corpus_score(h, r).score
  return scores_by_length(score, 'bleu', hyps, refs, src_lengths, edges)


def mean_std_ci95(values: Sequence[float]) -> tuple[float, float | None, float | None]:
  """Mean, sample standard deviation and half-width of the 95% t-interval of the mean (None, None for one value)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top

  x = np.asarray(values, np.float64)
  if len(x) < 2:
    return float(x.mean()), None, None
  std = float(x.std(ddof=1))
  return float(x.mean()), std, float(stats.t.ppf(0.975, len(x) - 1) * std / np.sqrt(len(x)))


def paired_bootstrap_exact_match(
  baseline: np.ndarray, system: np.ndarray, n_samples: int = 1000, seed: int | None = 12345
) -> tuple[float, float]:
  """(exact match of `system`, p-value of its difference from `baseline`) from per-sentence 0/1 matches.

  sacreBLEU's paired bootstrap recipe (sacrebleu.significance._paired_bs_test) for a score sacreBLEU does not have:
  the same resampled indices for a seed, p = (#{|d*| - mean|d*| > |d|} + 1) / (n_samples + 1). Identical inputs
  give p = 1 (the recipe would give 1 / (n_samples + 1) for a difference of exactly zero).
  """
  baseline, system = 100.0 * np.asarray(baseline, np.float64), 100.0 * np.asarray(system, np.float64)
  if np.array_equal(baseline, system):
    return float(system.mean()), 1.0
  idx = np.random.default_rng(seed).choice(len(system), size=(n_samples, len(system)), replace=True)
  sample_diffs = np.abs(system[idx].mean(axis=1) - baseline[idx].mean(axis=1))
  real = abs(system.mean() - baseline.mean())
  return float(system.mean()), float((np.sum(sample_diffs - sample_diffs.mean() > real) + 1) / (n_samples + 1))
