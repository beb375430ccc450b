"""Sequence-level training: minimum expected risk over a candidate set (Shen et al. 2016; Edunov et al. 2018).

Each step, for every source x: K candidates from the model itself (the n-best of a beam K wide, or K samples at
temperature 1), searched inside the compiled step with the parameters as they are (no dropout, no gradient through
the search), plus the reference y. Every candidate u gets a cost in [0, 1] against y and the model's sequence
log-probability log p(u | x) (teacher-forced, with dropout as in training); a candidate equal to an earlier one (or to
the reference) is left out of the set. With Q = softmax(alpha * log p) over the set, the risk is
R(x) = sum_u Q(u) cost(u), and the step minimises

  token_weight * (the token-level loss, summed) + (1 - token_weight) * sum_x |y| R(x),

|y| the reference's tokens (EOS included), so that both terms share the step's division by the global token count
(steps.train_step): at token_weight 0 the objective is the token-weighted mean risk.

Costs: `bleu` is 1 - BLEU+1 (Lin & Och 2004: n-grams 1..4, one added to the matches and the totals of n >= 2, BLEU's
brevity penalty) on the target token ids (subwords for a SentencePiece vocabulary), computed in JAX: equal to
sacreBLEU's `BLEU(tokenize='none', smooth_method='add-k')` on the ids written as words (a test checks it). `chrf` is
1 - chrF / 100 on the detokenised texts, sacreBLEU's `CHRF()` on the host through `jax.pure_callback`: the host's
time is part of the step's (docs/results.md measures it).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from s2s_jax import data as data_lib

LOSSES = ('none', 'risk')
COSTS = ('bleu', 'chrf')
SOURCES = ('beam', 'sample')
BLEU_ORDER = 4


@dataclasses.dataclass(frozen=True)
class Settings:
  """The structure of the sequence-level loss (static: a change recompiles); its weights are runtime inputs (hp)."""

  candidates: int  # K per source, besides the reference
  source: str  # 'beam' (the n-best of a beam K wide) or 'sample'
  cost: str  # 'bleu' or 'chrf'
  model: Any  # the models.Seq2Seq that searches the candidates
  tgt_vocab: Any = None  # the target vocabulary (cost chrf: texts for sacreBLEU)


def settings(config, model, tgt_vocab=None) -> Settings | None:
  """The settings of config.optim's sequence loss, or None when it is off."""
  o = config.optim
  if o.sequence_loss == 'none':
    return None
  if o.sequence_cost == 'chrf' and tgt_vocab is None:
    raise ValueError('optim.sequence_cost=chrf needs the target vocabulary (train.train_step_fn(config, tgt_vocab)).')
  return Settings(o.sequence_candidates, o.sequence_source, o.sequence_cost, model, tgt_vocab)


def _token_prefix(seq_NxT: jax.Array) -> jax.Array:
  """Bool [N, T]: the tokens before the first EOS or PAD (what a sentence score compares)."""
  token = (seq_NxT != data_lib.PAD_ID) & (seq_NxT != data_lib.EOS_ID)
  return jnp.cumprod(token, axis=1).astype(bool)


def _pair_bleu(hyp_T: jax.Array, hyp_ok_T: jax.Array, ref_T: jax.Array, ref_ok_T: jax.Array) -> jax.Array:
  """BLEU+1 in [0, 1] of one hypothesis against one reference (token prefixes marked by the masks)."""
  hyp_len, ref_len = hyp_ok_T.sum().astype(jnp.float32), ref_ok_T.sum().astype(jnp.float32)
  same_hh = hyp_T[:, None] == hyp_T[None, :]
  same_hr = hyp_T[:, None] == ref_T[None, :]
  eq_hh, eq_hr = same_hh, same_hr
  log_precisions, first_matches = [], None
  for n in range(1, BLEU_ORDER + 1):
    if n > 1:  # n-gram i equals n-gram j: their (n-1)-grams equal and so do tokens i+n-1, j+n-1
      eq_hh = eq_hh[:-1, :-1] & same_hh[n - 1 :, n - 1 :]
      eq_hr = eq_hr[:-1, :-1] & same_hr[n - 1 :, n - 1 :]
    hyp_gram, ref_gram = hyp_ok_T[n - 1 :], ref_ok_T[n - 1 :]  # n-gram i is real when its last token is
    count_h = (eq_hh & hyp_gram[None, :]).sum(axis=1)  # how often hypothesis n-gram i occurs in the hypothesis
    count_r = (eq_hr & ref_gram[None, :]).sum(axis=1)  # ... and in the reference
    # Clipped matches: sum over distinct n-grams g of min(count_h(g), count_r(g)), spread over g's occurrences.
    matches = jnp.where(hyp_gram, jnp.minimum(count_h, count_r) / jnp.maximum(count_h, 1), 0.0).sum()
    total = jnp.maximum(hyp_len - n + 1, 0.0)
    if n == 1:
      first_matches = matches
      precision = matches / jnp.maximum(total, 1.0)
    else:
      precision = (matches + 1.0) / (total + 1.0)
    log_precisions.append(jnp.log(jnp.maximum(precision, 1e-30)))
  log_bp = jnp.minimum(0.0, 1.0 - ref_len / jnp.maximum(hyp_len, 1.0))
  bleu = jnp.exp(log_bp + sum(log_precisions) / BLEU_ORDER)
  return jnp.where((first_matches > 0) & (hyp_len > 0), bleu, 0.0)


def bleu_cost(hyp_NxT: jax.Array, ref_NxT: jax.Array) -> jax.Array:
  """float32 [N]: 1 - BLEU+1 of each hypothesis row against its reference row (token ids; tokens up to EOS/PAD)."""
  bleu = jax.vmap(_pair_bleu)(hyp_NxT, _token_prefix(hyp_NxT), ref_NxT, _token_prefix(ref_NxT))
  return (1.0 - bleu).astype(jnp.float32)


def chrf_cost(hyp_NxT: jax.Array, ref_NxT: jax.Array, tgt_vocab) -> jax.Array:
  """float32 [N]: 1 - chrF / 100 of each detokenised hypothesis against its reference, sacreBLEU on the host."""

  def host(hyp, ref):
    from s2s_jax import mbr  # pylint: disable=import-outside-toplevel  (sacreBLEU only where chrF is asked for)

    metric = mbr._metric('chrf')  # pylint: disable=protected-access
    hyp, ref = np.asarray(hyp).reshape(-1, hyp.shape[-1]), np.asarray(ref).reshape(-1, ref.shape[-1])
    scores = [metric.sentence_score(tgt_vocab.decode(h), [tgt_vocab.decode(r)]).score for h, r in zip(hyp, ref)]
    return (1.0 - np.asarray(scores, np.float32) / 100.0).reshape(hyp_NxT.shape[:-1])

  out = jax.ShapeDtypeStruct(hyp_NxT.shape[:-1], jnp.float32)
  return jax.pure_callback(host, out, hyp_NxT, ref_NxT, vmap_method='sequential')


def costs(s: Settings, cand_BxCxT: jax.Array, ref_BxT: jax.Array) -> jax.Array:
  """float32 [B, C]: every candidate's cost against its source's reference (no gradient); a copy of the reference
  costs 0, also when both are empty (whose sentence scores are 0)."""
  b, c, t = cand_BxCxT.shape
  hyp = cand_BxCxT.reshape(b * c, t)
  ref = jnp.repeat(ref_BxT, c, axis=0)
  cost = bleu_cost(hyp, ref) if s.cost == 'bleu' else chrf_cost(hyp, ref, s.tgt_vocab)
  words = lambda seq: jnp.where(_token_prefix(seq), seq, -1)
  copy = jnp.all(words(hyp) == words(ref), axis=-1)
  return jax.lax.stop_gradient(jnp.where(copy, 0.0, cost).reshape(b, c))


def first_occurrences(cand_BxCxT: jax.Array) -> jax.Array:
  """Bool [B, C]: candidate c differs from candidates 0..c-1 of its row (duplicates count once)."""
  same_BxCxC = jnp.all(cand_BxCxT[:, :, None, :] == cand_BxCxT[:, None, :, :], axis=-1)
  earlier_1xCxC = jnp.tril(jnp.ones(same_BxCxC.shape[1:], bool), k=-1)[None]
  return ~jnp.any(same_BxCxC & earlier_1xCxC, axis=-1)


def expected_risk(logp_BxC: jax.Array, cost_BxC: jax.Array, keep_BxC: jax.Array, sharpness) -> jax.Array:
  """float32 [B]: sum_c Q(c) cost(c), Q = softmax(sharpness * logp) over the kept candidates of each row."""
  q_BxC = jax.nn.softmax(jnp.where(keep_BxC, sharpness * logp_BxC, -jnp.inf), axis=-1)
  return jnp.sum(jnp.where(keep_BxC, q_BxC * cost_BxC, 0.0), axis=-1)


def sequence_log_probs(logits_NxTxV: jax.Array, seq_NxT: jax.Array) -> jax.Array:
  """float32 [N]: the summed log-probabilities of each row's tokens (PAD excluded; EOS included)."""
  logp = jax.nn.log_softmax(logits_NxTxV.astype(jnp.float32), axis=-1)
  token_logp = jnp.take_along_axis(logp, seq_NxT[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(seq_NxT != data_lib.PAD_ID, token_logp, 0.0), axis=-1)
