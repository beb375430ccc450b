"""Model-agnostic beam search; greedy decoding is beam size 1 (sampling: s2s_jax/sampling.py).

The decoders know nothing about models. They call a `StepFn`
`(ids_N, dec_state) -> (logits_NxV, dec_state)` once per emitted token, with
`N = B*K` rows laid out row-major: row `b*K + k` is beam (or sample) `k` of
batch row `b`. Anything the model needs besides the recurrent state (encoder
memory, masks) is closed over by the step function, already tiled to `N` rows
with `expand_to_beams`, so it never enters the loop carry. A step function may
return a third output, a dict of auxiliary per-row arrays `[N, ...]` about the
token it scored: `{'attention': [N, S]}` (the attention behind it) is what
coverage and `return_aux` need; the search carries it with its hypotheses and
reorders it with them, and never looks inside `dec_state`.

The settings are one frozen dataclass, `DecodeOptions`: the fields of
`config.decode`, the decoding flags of translate / evaluate (`FLAGS`) and the
keyword arguments of `beam_search` are its fields; `options()` builds it from a
run's config and command-line overrides (resolving `max_len=0`).

Search: every step extends each live hypothesis by every allowed token and
keeps the top 2K of the K*V extensions. Those ending in EOS that rank among the
top K finish (fairseq's rule, so beam 1 with `length_alpha=0` is exactly
greedy); the best K that do not end in EOS stay live, so finishing never
shrinks the beam. The loop stops at `max_len`, or once no live hypothesis of
any row can beat that row's K-th finished one.

Contracts:
  * Outputs: `seqs_BxKxT` int32 (`T = max_len`) and `scores_BxK` float32,
    sorted best FIRST within each batch row (samples: in sample order).
  * A sequence excludes BOS, includes its EOS, and is padded with `pad_id` after
    it. The decoder never emits `pad_id` (its log-prob is forced to -inf, as in
    fairseq), so PAD appears only after EOS and `pad_id != eos_id` is required.
  * Score of a finished hypothesis `y`: `sum_t log p(y_t) / lp(|y|) + cp(y)`
    with `lp(L) = ((5 + L) / 6) ** length_alpha` (GNMT); `|y|` counts the EOS
    and `length_alpha = 0` means no normalization. Log-probs are the model's
    own (`log_softmax` in float32), never renormalized after masking tokens.
    `cp` is the GNMT coverage penalty (0 unless `coverage_beta > 0`):
    `beta * sum_i log(min(max(sum_t a_ti, 1e-6), 1))` over real source
    positions i; the 1e-6 floor makes an unattended word cost a large finite
    `beta * log(1e-6)` instead of -inf. It is added only when a hypothesis
    finishes, never to the live log-probs that rank the search; as `cp <= 0`
    the early-stop bound stays valid.
  * Masks (beam search and sampling): no EOS while fewer than `min_len` tokens
    precede it; at the step where a row reaches `row_max_len[b] < max_len`
    tokens only EOS is allowed, so every hypothesis of that row has
    `|y| <= row_max_len[b]`; with `no_repeat_ngram_size = n` no hypothesis
    holds the same n tokens twice (BOS excluded, EOS counted).
  * A batch row without any finished hypothesis at `max_len` returns its live
    hypotheses scored with `|y| = max_len` (they contain no EOS). A row with
    fewer than K finished hypotheses returns them plus empty slots: score -inf,
    all `pad_id` (and zero attention); so does a row whose every hypothesis
    has probability 0 (e.g. the model forbids EOS where its limit forces it).

Shape suffixes: B batch, K beam (or sample), N = B*K, S source, T = max_len,
V vocab, M = 2K candidates, C sampling candidates, W = T - n + 1 n-gram
windows, P = n - 1.
"""

# pylint: disable=invalid-name
from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import flax
import jax
from jax import lax
import jax.numpy as jnp

PyTree = Any
StepFn = Callable[[jax.Array, PyTree], tuple[jax.Array, PyTree]]

NEG_INF = float('-inf')
COVERAGE_FLOOR = 1e-6  # smallest coverage inside the log of the penalty


@flax.struct.dataclass
class BeamState:
  """Loop carry of `beam_search`; every array is per batch row and beam."""

  t: jax.Array  # [] int32, tokens emitted so far
  live_seqs_BxKxT: jax.Array  # int32, pad-filled; live hypotheses hold no EOS
  live_logp_BxK: jax.Array  # float32, summed log-probs; -inf marks a dead slot
  done_seqs_BxKxT: jax.Array  # int32, EOS included, pad after
  done_score_BxK: jax.Array  # float32, length-normalized; -inf = empty slot
  dec_state: PyTree  # every leaf [B, K, ...]
  live_cov_BxKxS: jax.Array | None = None  # summed attention; coverage only
  live_attn_BxKxTxS: jax.Array | None = None  # per token; return_aux only
  done_attn_BxKxTxS: jax.Array | None = None  # zeros after EOS; return_aux


def _setting(default, help_text: str, flag: bool = True):
  return dataclasses.field(default=default, metadata={'help': help_text, 'flag': flag})


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to decode: config.decode's fields, translate / evaluate's flags and beam_search's settings, described once.

  Static: a change recompiles the search. `max_len=0` means "the data's max_tgt_len" until `options()` resolves it.
  """

  beam_size: int = _setting(5, 'Beam size (1: greedy).')
  length_alpha: float = _setting(0.6, 'GNMT length penalty alpha, ((5 + |y|) / 6) ** alpha (0: none).')
  max_len: int = _setting(0, 'Static cap on output tokens, EOS included (0: data.max_tgt_len).')
  max_len_a: float = _setting(0.0, 'At most max_len_a * source tokens + max_len_b output tokens (0: off).')
  max_len_b: int = _setting(0, 'See max_len_a.')
  min_len: int = _setting(0, 'No EOS before this many tokens.')
  no_repeat_ngram_size: int = _setting(0, 'Never repeat an n-gram of this size (0: off).')
  coverage_beta: float = _setting(0.0, 'GNMT coverage penalty weight (attention flows only; 0: off).')
  batch_size: int = _setting(64, 'Sentences per decoding batch (translate, evaluate; training: data.eval_batch_size).')
  return_attention: bool = _setting(False, 'Also return the attention behind every output token.', flag=False)


# (name, type, help) of every setting that is a config field and a command-line flag.
FLAGS = tuple((f.name, f.type, f.metadata['help']) for f in dataclasses.fields(DecodeOptions) if f.metadata['flag'])


def config_defaults() -> dict[str, Any]:
  """config.decode's fields and defaults (base_config)."""
  return {name: getattr(DecodeOptions(), name) for name, _, _ in FLAGS}


def options(decode_config: Mapping[str, Any], max_tgt_len: int, **overrides) -> DecodeOptions:
  """The settings of a run: its config.decode with the non-None `overrides` (command-line flags, return_attention),
  and max_len=0 resolved to `max_tgt_len`. Raises ValueError when min_len leaves no room below max_len."""
  known = {f.name for f in dataclasses.fields(DecodeOptions)}
  if unknown := sorted(set(overrides) - known):
    raise ValueError(f'Unknown decoding setting(s) {unknown}; known: {sorted(known)}.')
  kw = {k: v for k, v in dict(decode_config).items() if k in known}
  kw.update({k: v for k, v in overrides.items() if v is not None})
  out = DecodeOptions(**kw)
  out = dataclasses.replace(out, max_len=out.max_len or max_tgt_len)
  if out.min_len >= out.max_len:
    raise ValueError(f'decode.min_len={out.min_len} must be below the decoding length limit {out.max_len}.')
  return out


@dataclasses.dataclass(frozen=True)
class _Options(DecodeOptions):
  """One search call: its settings, the special ids and the traced per-row inputs they need."""

  bos_id: int = -1
  eos_id: int = -1
  pad_id: int = 0
  row_limit_B: jax.Array | None = None  # int32 in [min_len + 1, max_len]
  source_mask_BxS: jax.Array | None = None  # float32; set when coverage or return_attention needs attention


def expand_to_beams(tree: PyTree, beam_size: int) -> PyTree:
  """Tiles every leaf `[B, ...] -> [B*K, ...]`, row `b*K + k` = row `b`.

  Use it for whatever the step function closes over (encoder memory, masks),
  so that its rows line up with the `N = B*K` rows the decoders pass.

  Args:
    tree: pytree of arrays with leading dimension B.
    beam_size: K (or `num_samples`).

  Returns:
    The same pytree with every leaf repeated K times along axis 0.
  """
  return jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def _tile_beams(tree: PyTree, beam_size: int) -> PyTree:
  """[B, ...] -> [B, K, ...] (each row copied K times)."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], beam_size) + x.shape[1:]), tree)


def _flatten_beams(tree: PyTree) -> PyTree:
  """[B, K, ...] -> [B*K, ...]."""
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def _unflatten_beams(tree: PyTree, batch_size: int) -> PyTree:
  """[B*K, ...] -> [B, K, ...]."""
  return jax.tree.map(lambda x: x.reshape((batch_size, -1) + x.shape[1:]), tree)


def _gather_beams(tree: PyTree, idx_BxM: jax.Array) -> PyTree:
  """Picks beams per batch row: leaves [B, K, ...] -> [B, M, ...]."""
  take = jax.vmap(lambda x, i: x[i])
  return jax.tree.map(lambda x: take(x, idx_BxM), tree)


def _top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """lax.top_k behind an optimization barrier.

  Without it, XLA:CPU (jaxlib 0.10.2) rewrites a top_k whose values are later sliced into a full stable sort of
  the last axis: 85 ms instead of 0.75 ms for [64, 8000] (measured), which made a beam step 100x slower.
  """
  values, indices = lax.top_k(x, k)
  # One barrier per output: a barrier on the (values, indices) tuple crashes XLA's TopkDecomposer (seen on
  # pmapped CPU decoding with small inputs).
  return lax.optimization_barrier(values), lax.optimization_barrier(indices)


def _length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
  """GNMT ((5 + length) / 6) ** alpha; exactly 1 when alpha == 0."""
  length = jnp.asarray(length, jnp.float32)
  return ((5.0 + length) / 6.0) ** alpha


def _coverage_penalty(cov_BxMxS: jax.Array, opts: _Options) -> jax.Array:
  """GNMT beta * sum_i log(min(cov_i, 1)) over real positions, floored."""
  log_cov_BxMxS = jnp.log(jnp.clip(cov_BxMxS, COVERAGE_FLOOR, 1.0))
  mask_Bx1xS = opts.source_mask_BxS[:, None, :]
  return opts.coverage_beta * jnp.sum(log_cov_BxMxS * mask_Bx1xS, axis=-1)


def _repeated_ngram_mask(seqs_BxKxT: jax.Array, t: jax.Array, n: int, vocab_size: int) -> jax.Array:
  """bool [B, K, V]: tokens that would repeat an n-gram of tokens [0, t)."""
  batch_size, beam_size, max_len = seqs_BxKxT.shape
  num_windows = max_len - n + 1  # window j: tokens j .. j+n-1
  if num_windows < 1:
    return jnp.zeros((batch_size, beam_size, vocab_size), bool)
  seqs_NxT = seqs_BxKxT.reshape(-1, max_len)
  # The n-1 tokens before position t (clamped when t < n-1: no window is
  # complete then, so no token is banned).
  suffix_NxP = lax.dynamic_slice_in_dim(seqs_NxT, t - (n - 1), n - 1, axis=1)
  # Window j is complete (its last token emitted) when j + n - 1 < t.
  complete_W = jnp.arange(num_windows) + n - 1 < t
  match_NxW = jnp.broadcast_to(complete_W[None], (len(seqs_NxT), num_windows))
  for i in range(n - 1):  # static: compares every window at once
    match_NxW &= seqs_NxT[:, i : i + num_windows] == suffix_NxP[:, i : i + 1]
  banned_NxW = jnp.where(match_NxW, seqs_NxT[:, n - 1 :], vocab_size)
  rows_NxW = jnp.broadcast_to(jnp.arange(len(seqs_NxT))[:, None], banned_NxW.shape)
  mask_NxV = (
    jnp.zeros((len(seqs_NxT), vocab_size), bool).at[rows_NxW, banned_NxW].set(True, mode='drop')
  )  # vocab_size: no ban
  return mask_NxV.reshape(batch_size, beam_size, vocab_size)


def _mask_tokens(logp_BxKxV: jax.Array, seqs_BxKxT: jax.Array, t: jax.Array, opts: _Options) -> jax.Array:
  """-inf for PAD and for whatever min_len, row limits and n-grams forbid."""
  logp_BxKxV = logp_BxKxV.at[..., opts.pad_id].set(NEG_INF)
  vocab_size = logp_BxKxV.shape[-1]
  if opts.min_len > 0:
    logp_BxKxV = logp_BxKxV.at[..., opts.eos_id].set(jnp.where(t < opts.min_len, NEG_INF, logp_BxKxV[..., opts.eos_id]))
  if opts.row_limit_B is not None:
    # Rows limited to max_len keep the plain behaviour (fallback at the end).
    limit_B = opts.row_limit_B
    at_limit_Bx1x1 = ((t + 1 >= limit_B) & (limit_B < opts.max_len))[:, None, None]
    not_eos_1x1xV = (jnp.arange(vocab_size) != opts.eos_id)[None, None]
    logp_BxKxV = jnp.where(at_limit_Bx1x1 & not_eos_1x1xV, NEG_INF, logp_BxKxV)
  if opts.no_repeat_ngram_size > 0:
    banned_BxKxV = _repeated_ngram_mask(seqs_BxKxT, t, opts.no_repeat_ngram_size, vocab_size)
    logp_BxKxV = jnp.where(banned_BxKxV, NEG_INF, logp_BxKxV)
  return logp_BxKxV


def _call(step_fn: StepFn, ids_N: jax.Array, dec_state_N: PyTree) -> tuple[jax.Array, PyTree, dict[str, jax.Array]]:
  """(logits, new state, auxiliary outputs or {}) of one step-function call."""
  out = step_fn(ids_N, dec_state_N)
  return out if len(out) == 3 else (*out, {})


def _next_log_probs(
  step_fn: StepFn, seqs_BxKxT: jax.Array, t: jax.Array, dec_state: PyTree, opts: _Options
) -> tuple[jax.Array, PyTree, dict[str, jax.Array]]:
  """Runs the model on the last tokens: masked log-probs [B, K, V], state,
  auxiliary outputs [B, K, ...]."""
  batch_size = seqs_BxKxT.shape[0]
  prev_BxK = lax.dynamic_index_in_dim(seqs_BxKxT, jnp.maximum(t - 1, 0), axis=2, keepdims=False)
  ids_BxK = jnp.where(t == 0, opts.bos_id, prev_BxK).astype(jnp.int32)
  logits_NxV, dec_state_N, aux_N = _call(step_fn, ids_BxK.reshape(-1), _flatten_beams(dec_state))
  logp_NxV = jax.nn.log_softmax(logits_NxV.astype(jnp.float32), axis=-1)
  # Masking after log_softmax keeps scores equal to the model's log-probs.
  logp_BxKxV = _mask_tokens(_unflatten_beams(logp_NxV, batch_size), seqs_BxKxT, t, opts)
  return (logp_BxKxV, _unflatten_beams(dec_state_N, batch_size), _unflatten_beams(aux_N, batch_size))


def _init_state(init_state: PyTree, batch_size: int, beam_size: int, opts: _Options) -> BeamState:
  """Beam 0 alive (log-prob 0), the others -inf so hypotheses stay distinct."""
  shape = (batch_size, beam_size, opts.max_len)
  live_logp_BxK = jnp.full((batch_size, beam_size), NEG_INF, jnp.float32)
  aux = {}
  if opts.source_mask_BxS is not None:
    cov_BxKxS = jnp.zeros((batch_size, beam_size) + opts.source_mask_BxS.shape[1:], jnp.float32)
    if opts.coverage_beta > 0:
      aux['live_cov_BxKxS'] = cov_BxKxS
    if opts.return_attention:
      attn_BxKxTxS = jnp.zeros(shape + cov_BxKxS.shape[2:], jnp.float32)
      aux.update(live_attn_BxKxTxS=attn_BxKxTxS, done_attn_BxKxTxS=attn_BxKxTxS)
  return BeamState(
    t=jnp.zeros((), jnp.int32),
    live_seqs_BxKxT=jnp.full(shape, opts.pad_id, jnp.int32),
    live_logp_BxK=live_logp_BxK.at[:, 0].set(0.0),
    done_seqs_BxKxT=jnp.full(shape, opts.pad_id, jnp.int32),
    done_score_BxK=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
    dec_state=_tile_beams(init_state, beam_size),
    **aux,
  )


def _top_candidates(
  total_BxKxV: jax.Array, live_seqs_BxKxT: jax.Array, t: jax.Array, num_candidates: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Best extensions over all beams: (logp, seqs, token, parent beam)."""
  batch_size, _, vocab_size = total_BxKxV.shape
  logp_BxM, flat_idx_BxM = _top_k(total_BxKxV.reshape(batch_size, -1), num_candidates)
  parent_BxM = flat_idx_BxM // vocab_size
  token_BxM = (flat_idx_BxM % vocab_size).astype(jnp.int32)
  seqs_BxMxT = _gather_beams(live_seqs_BxKxT, parent_BxM)
  seqs_BxMxT = seqs_BxMxT.at[:, :, t].set(token_BxM)
  return logp_BxM, seqs_BxMxT, token_BxM, parent_BxM


def _candidate_aux(
  state: BeamState, step_aux: dict[str, jax.Array], parent_BxM: jax.Array, opts: _Options
) -> dict[str, jax.Array]:
  """Coverage ('cov') and attention history ('attn') of each candidate."""
  if opts.source_mask_BxS is None:
    return {}
  # The attention that produced this step's token, zero on source padding.
  attn_BxKxS = step_aux['attention'].astype(jnp.float32) * opts.source_mask_BxS[:, None, :]
  aux = {}
  if state.live_cov_BxKxS is not None:
    aux['cov'] = _gather_beams(state.live_cov_BxKxS + attn_BxKxS, parent_BxM)
  if state.live_attn_BxKxTxS is not None:
    hist_BxKxTxS = state.live_attn_BxKxTxS.at[:, :, state.t].set(attn_BxKxS)
    aux['attn'] = _gather_beams(hist_BxKxTxS, parent_BxM)
  return aux


def _merge_done(
  done_score_BxK: jax.Array, done: PyTree, new_score_BxK: jax.Array, new: PyTree
) -> tuple[jax.Array, PyTree]:
  """Keeps the K best of old and new finished hypotheses (old first on ties)."""
  beam_size = done_score_BxK.shape[1]
  score_Bx2K = jnp.concatenate([done_score_BxK, new_score_BxK], axis=1)
  both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), done, new)
  score_BxK, idx_BxK = _top_k(score_Bx2K, beam_size)
  return score_BxK, _gather_beams(both, idx_BxK)


def _beam_step(state: BeamState, step_fn: StepFn, opts: _Options) -> BeamState:
  """One token for every hypothesis: grow, then split into done and live."""
  beam_size = state.live_logp_BxK.shape[1]
  logp_BxKxV, dec_state, step_aux = _next_log_probs(step_fn, state.live_seqs_BxKxT, state.t, state.dec_state, opts)
  live_logp_BxKx1 = state.live_logp_BxK[..., None]
  # Dead slots stay dead whatever the model returns for their (arbitrary) ids.
  total_BxKxV = jnp.where(live_logp_BxKx1 > NEG_INF, logp_BxKxV + live_logp_BxKx1, NEG_INF)
  # 2K candidates hold at least K non-EOS ones (one EOS per parent at most).
  num_candidates = min(2 * beam_size, total_BxKxV.shape[1] * total_BxKxV.shape[2])
  logp_BxM, seqs_BxMxT, token_BxM, parent_BxM = _top_candidates(
    total_BxKxV, state.live_seqs_BxKxT, state.t, num_candidates
  )
  aux_BxM = _candidate_aux(state, step_aux, parent_BxM, opts)
  is_eos_BxM = token_BxM == opts.eos_id
  # As in fairseq, only EOS among the top K extensions finishes (so beam 1 is
  # exactly greedy); a dead (-inf) slot that picks EOS never finishes.
  finishes_BxK = (is_eos_BxM & (logp_BxM > NEG_INF))[:, :beam_size]
  new_score_BxK = logp_BxM[:, :beam_size] / _length_penalty(state.t + 1, opts.length_alpha)
  if 'cov' in aux_BxM:
    new_score_BxK += _coverage_penalty(aux_BxM['cov'][:, :beam_size], opts)
  new_score_BxK = jnp.where(finishes_BxK, new_score_BxK, NEG_INF)
  new_done = {'seqs': seqs_BxMxT[:, :beam_size]}
  done = {'seqs': state.done_seqs_BxKxT}
  if 'attn' in aux_BxM:
    new_done['attn'] = aux_BxM['attn'][:, :beam_size]
    done['attn'] = state.done_attn_BxKxTxS
  done_score_BxK, done = _merge_done(state.done_score_BxK, done, new_score_BxK, new_done)
  live_logp_BxK, live_idx_BxK = _top_k(jnp.where(is_eos_BxM, NEG_INF, logp_BxM), beam_size)
  parent_BxK = jnp.take_along_axis(parent_BxM, live_idx_BxK, axis=1)
  live = _gather_beams({'seqs': seqs_BxMxT, **aux_BxM}, live_idx_BxK)
  return BeamState(
    t=state.t + 1,
    live_seqs_BxKxT=live['seqs'],
    live_logp_BxK=live_logp_BxK,
    done_seqs_BxKxT=done['seqs'],
    done_score_BxK=done_score_BxK,
    dec_state=_gather_beams(dec_state, parent_BxK),
    live_cov_BxKxS=live.get('cov'),
    live_attn_BxKxTxS=live.get('attn'),
    done_attn_BxKxTxS=done.get('attn'),
  )


def _not_finished(state: BeamState, opts: _Options) -> jax.Array:
  """False at max_len or once every row is finished (see the bound below)."""
  # Log-probs only decrease and cp <= 0, so a live beam's best possible final
  # score is its log-prob over the largest penalty among the reachable lengths.
  max_penalty = jnp.maximum(
    _length_penalty(state.t + 1, opts.length_alpha), _length_penalty(opts.max_len, opts.length_alpha)
  )
  best_bound_B = jnp.max(state.live_logp_BxK, axis=1) / max_penalty
  worst_done_B = jnp.min(state.done_score_BxK, axis=1)
  # With an empty done slot (-inf) a row finishes only when no beam is alive.
  row_finished_B = best_bound_B <= worst_done_B
  return (state.t < opts.max_len) & ~jnp.all(row_finished_B)


def _finalize(state: BeamState, opts: _Options) -> tuple[jax.Array, ...]:
  """Done hypotheses, or live ones for rows that never finished; best first."""
  beam_size = state.done_score_BxK.shape[1]
  has_done_B = jnp.max(state.done_score_BxK, axis=1) > NEG_INF
  fallback_BxK = state.live_logp_BxK / _length_penalty(opts.max_len, opts.length_alpha)
  if state.live_cov_BxKxS is not None:  # dead slots may hold NaN coverage
    fallback_BxK = jnp.where(
      fallback_BxK > NEG_INF, fallback_BxK + _coverage_penalty(state.live_cov_BxKxS, opts), NEG_INF
    )
  # None leaves (no attention kept) are empty subtrees and pass through.
  done = (state.done_score_BxK, state.done_seqs_BxKxT, state.done_attn_BxKxTxS)
  live = (fallback_BxK, state.live_seqs_BxKxT, state.live_attn_BxKxTxS)
  pick = lambda d, l: jnp.where(_expand_as(has_done_B, d), d, l)
  scores_BxK, *out = jax.tree.map(pick, done, live)
  scores_BxK, order_BxK = _top_k(scores_BxK, beam_size)
  seqs_BxKxT, attn_BxKxTxS = _gather_beams(out, order_BxK)
  valid_BxK = scores_BxK > NEG_INF
  seqs_BxKxT = jnp.where(_expand_as(valid_BxK, seqs_BxKxT), seqs_BxKxT, opts.pad_id)
  if attn_BxKxTxS is not None:  # NaN-safe: dead slots may hold anything
    attn_BxKxTxS = jnp.where(_expand_as(valid_BxK, attn_BxKxTxS), attn_BxKxTxS, 0.0)
  return (seqs_BxKxT.astype(jnp.int32), scores_BxK.astype(jnp.float32), attn_BxKxTxS)


def _expand_as(x: jax.Array, like: jax.Array) -> jax.Array:
  """Appends unit axes to `x` up to the rank of `like` (for jnp.where)."""
  return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def _check_args(
  init_state: PyTree,
  *,
  batch_size: int,
  beam_size: int,
  max_len: int,
  eos_id: int,
  pad_id: int,
  min_len: int,
  row_max_len: jax.Array | None,
  beam_name: str = 'beam_size',
) -> None:
  """Raises ValueError on arguments the static-shape loop cannot handle."""
  if batch_size < 1 or beam_size < 1 or max_len < 1:
    raise ValueError(f'batch_size={batch_size}, {beam_name}={beam_size} and max_len={max_len} must all be >= 1.')
  if pad_id == eos_id:
    raise ValueError(f'pad_id and eos_id must differ, both are {pad_id}.')
  if not 0 <= min_len < max_len:
    raise ValueError(f'min_len={min_len} must be in [0, max_len={max_len}).')
  if row_max_len is not None and jnp.shape(row_max_len) != (batch_size,):
    raise ValueError(f'row_max_len has shape {jnp.shape(row_max_len)}; expected (batch_size,) = ({batch_size},).')
  for path, leaf in jax.tree_util.tree_leaves_with_path(init_state):
    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != batch_size:
      raise ValueError(
        f'init_state leaf {jax.tree_util.keystr(path)} has shape '
        f'{jnp.shape(leaf)}; every leaf needs leading dimension '
        f'batch_size={batch_size}.'
      )


def _check_beam_options(
  step_fn: StepFn,
  init_state: PyTree,
  source_mask: jax.Array | None,
  *,
  batch_size: int,
  beam_size: int,
  no_repeat_ngram_size: int,
  coverage_beta: float,
  return_aux: bool,
) -> None:
  """Coverage and return_aux need source_mask and the step function's
  auxiliary 'attention' output (checked on shapes, without running it)."""
  if no_repeat_ngram_size < 0:
    raise ValueError(f'no_repeat_ngram_size={no_repeat_ngram_size} must be >= 0.')
  if coverage_beta < 0:
    raise ValueError(f'coverage_beta={coverage_beta} must be >= 0 (the penalty must not reward lack of coverage).')
  if not (coverage_beta > 0 or return_aux):
    return
  mask_shape = None if source_mask is None else jnp.shape(source_mask)
  if mask_shape is None or len(mask_shape) != 2 or (mask_shape[0] != batch_size):
    raise ValueError(
      f'coverage_beta > 0 and return_aux need source_mask of shape [batch_size={batch_size}, S], got {mask_shape}.'
    )
  rows = batch_size * beam_size
  ids_N = jax.ShapeDtypeStruct((rows,), jnp.int32)
  state_N = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows,) + jnp.shape(x)[1:], jnp.result_type(x)), init_state)
  out = jax.eval_shape(step_fn, ids_N, state_N)
  shape = (rows, mask_shape[1])
  aux = out[2] if len(out) == 3 else None
  if not isinstance(aux, Mapping) or 'attention' not in aux or (aux['attention'].shape != shape):
    raise ValueError(
      'coverage_beta > 0 and return_aux need a step function returning '
      "(logits, state, {'attention': [N, S]}); expected the attention of "
      f'shape {shape}, got the outputs {out}.'
    )


def _make_options(
  *, max_len: int, min_len: int, row_max_len: jax.Array | None, source_mask: jax.Array | None, **static
) -> _Options:
  """Static options plus traced row limits (clipped) and source mask."""
  if row_max_len is not None:  # min_len wins over a smaller row limit
    row_max_len = jnp.clip(jnp.asarray(row_max_len, jnp.int32), min_len + 1, max_len)
  if source_mask is not None:
    source_mask = jnp.asarray(source_mask, jnp.float32)
  return _Options(max_len=max_len, min_len=min_len, row_limit_B=row_max_len, source_mask_BxS=source_mask, **static)


def beam_search(
  step_fn: StepFn,
  init_state: PyTree,
  *,
  batch_size: int,
  beam_size: int,
  max_len: int,
  bos_id: int,
  eos_id: int,
  pad_id: int = 0,
  length_alpha: float = 0.0,
  min_len: int = 0,
  row_max_len: jax.Array | None = None,
  no_repeat_ngram_size: int = 0,
  coverage_beta: float = 0.0,
  source_mask: jax.Array | None = None,
  return_aux: bool = False,
) -> tuple[Any, ...]:
  """Beam search over `step_fn`; `beam_size=1` is greedy decoding.

  Static shapes throughout (one `lax.while_loop`), so it can be jitted with
  `functools.partial(beam_search, step_fn, batch_size=..., ...)` and reused for
  new `init_state`, `row_max_len` and `source_mask` values without retracing.
  The module docstring states the output contract (sort order, EOS/PAD layout,
  scores, masks). The defaults reproduce plain beam search exactly.

  Args:
    step_fn: `(ids int32[N], state) -> (logits [N, V], new_state[, aux])`
      with `N = batch_size * beam_size`; state and aux leaves are `[N, ...]`.
      The first call gets `bos_id` in every row. Logits may be any float dtype.
    init_state: decoder state, every leaf `[batch_size, ...]`, tiled to beams
      inside as `expand_to_beams` tiles. Coverage and `return_aux` need a
      step function that also returns `{'attention': [N, S]}`, the attention
      behind the token it scores.
    batch_size: B.
    beam_size: K; may exceed the vocabulary (surplus slots come back as -inf).
    max_len: T, the most tokens per hypothesis, EOS included.
    bos_id, eos_id, pad_id: fed first (never output); ends a hypothesis; fills
      the output after EOS (never generated).
    length_alpha: GNMT length-penalty exponent; 0 means raw log-prob sums.
    min_len: static; no EOS while fewer than `min_len` tokens were emitted.
    row_max_len: optional int32 `[B]` limit on |y| (EOS included), clipped to
      `[min_len + 1, max_len]`; below `max_len` a row must emit EOS there.
    no_repeat_ngram_size: static n (0 = off); no n-gram occurs twice.
    coverage_beta: static GNMT coverage-penalty weight (0 = off).
    source_mask: `[B, S]`, 1 on real source positions (coverage, return_aux).
    return_aux: also return `{'attention': float32[B, K, max_len, S]}` behind
      every returned token (zero after EOS, on padding and in empty slots).

  Returns:
    `(seqs int32[B, K, max_len], scores float32[B, K])`, best FIRST per row,
    plus the aux dict when `return_aux`.
  """
  _check_args(
    init_state,
    batch_size=batch_size,
    beam_size=beam_size,
    max_len=max_len,
    eos_id=eos_id,
    pad_id=pad_id,
    min_len=min_len,
    row_max_len=row_max_len,
  )
  _check_beam_options(
    step_fn,
    init_state,
    source_mask,
    batch_size=batch_size,
    beam_size=beam_size,
    return_aux=return_aux,
    no_repeat_ngram_size=no_repeat_ngram_size,
    coverage_beta=coverage_beta,
  )
  opts = _make_options(
    bos_id=bos_id,
    eos_id=eos_id,
    pad_id=pad_id,
    max_len=max_len,
    beam_size=beam_size,
    length_alpha=length_alpha,
    min_len=min_len,
    row_max_len=row_max_len,
    no_repeat_ngram_size=no_repeat_ngram_size,
    coverage_beta=coverage_beta,
    return_attention=return_aux,
    source_mask=source_mask if coverage_beta > 0 or return_aux else None,
  )
  state = _init_state(init_state, batch_size, beam_size, opts)
  state = lax.while_loop(lambda s: _not_finished(s, opts), lambda s: _beam_step(s, step_fn, opts), state)
  seqs_BxKxT, scores_BxK, attn_BxKxTxS = _finalize(state, opts)
  if return_aux:
    return seqs_BxKxT, scores_BxK, {'attention': attn_BxKxTxS}
  return seqs_BxKxT, scores_BxK
