"""Model-agnostic beam search; greedy decoding is beam size 1 (sampling: s2s_jax/sampling.py).

The decoders know nothing about models. They call a `StepFn`
`(ids_N, dec_state) -> (logits_NxV, dec_state)` once per emitted token, with
`N = B*K` rows laid out row-major: row `b*K + k` is beam (or sample) `k` of
batch row `b`. Anything the model needs besides the recurrent state (encoder
memory, masks) is closed over by the step function, already tiled to `N` rows
with `expand_to_beams`, so it never enters the loop carry. A step function may
return a third output, a dict of auxiliary per-row arrays `[N, ...]` about the
token it scored: `{'attention': [N, S]}` (the attention behind it) is what
coverage and `return_attention` need; the search carries it with its
hypotheses and reorders it with them, and never looks inside `dec_state`.

The settings are one frozen dataclass, `DecodeOptions`: the fields of
`config.decode` and the decoding flags of translate / evaluate (`FLAGS`) are
its fields, and `beam_search` and `sampling.sample` take it whole, next to the
special ids and the per-call arrays; `options()` builds it from a run's config
and command-line overrides (resolving `max_len=0`).

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
from collections.abc import Callable
from collections.abc import Mapping
import dataclasses
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from s2s_jax import search_ops as ops
from s2s_jax.search_ops import NEG_INF
from s2s_jax.search_ops import PyTree
from s2s_jax.search_ops import StepFn


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamState:
  """Loop carry of `beam_search`; every array is per batch row and beam."""

  t: jax.Array  # [] int32, tokens emitted so far
  live_seqs_BxKxT: jax.Array  # int32, pad-filled; live hypotheses hold no EOS
  live_logp_BxK: jax.Array  # float32, summed log-probs; -inf marks a dead slot
  done_seqs_BxKxT: jax.Array  # int32, EOS included, pad after
  done_score_BxK: jax.Array  # float32, length-normalized; -inf = empty slot
  dec_state: PyTree  # every leaf [B, K, ...]
  live_cov_BxKxS: jax.Array | None = None  # summed attention; coverage only
  live_attn_BxKxTxS: jax.Array | None = None  # per token; return_attention only
  done_attn_BxKxTxS: jax.Array | None = None  # zeros after EOS; return_attention


def _setting(default, help_text: str, flag: bool = True):
  return dataclasses.field(default=default, metadata={'help': help_text, 'flag': flag})


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to decode: config.decode's fields, translate / evaluate's flags and the searches' settings, described once.

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
  sample: bool = _setting(False, 'Ancestral sampling (sampling.sample) instead of beam search.')
  num_samples: int = _setting(1, 'With sample: samples per input (consecutive output lines).')
  temperature: float = _setting(1.0, 'With sample: divides the log-probabilities (0: greedy).')
  top_k: int = _setting(0, 'With sample: draw among the k most likely tokens (0: all).')
  top_p: float = _setting(1.0, 'With sample: nucleus mass in (0, 1] (1: all).')
  epsilon: float = _setting(0.0, 'With sampling: drop tokens of probability below epsilon (epsilon sampling; 0: off).')
  mbr: str = _setting('none', 'Minimum-Bayes-risk selection among candidates by this utility: none, bleu or chrf.')
  mbr_candidates: int = _setting(16, 'With mbr: candidates per input (samples, or the n-best of a beam this wide).')
  mbr_source: str = _setting('sample', 'With mbr: the candidates are samples (the sampling settings) or beam n-best.')
  return_attention: bool = _setting(False, 'Also return the attention behind every output token.', flag=False)

  @property
  def draws_samples(self) -> bool:
    """Whether the search samples (so the seed matters): sampling, or MBR among sampled candidates."""
    return self.sample or (self.mbr != 'none' and self.mbr_source == 'sample')


# (name, type, help) of every setting that is a config field and a command-line flag.
FLAGS = tuple((f.name, f.type, f.metadata['help']) for f in dataclasses.fields(DecodeOptions) if f.metadata['flag'])


def define_flags(absl_flags) -> Callable[[], dict[str, Any]]:
  """For the entry points (translate, evaluate): defines one command-line flag per setting of FLAGS through absl's
  `flags` module (`absl_flags`; the library defines no flag of its own), each defaulting to None (the run's
  config.decode), and returns a function giving the settings set on the command line: `options`' overrides."""
  define = {
    int: absl_flags.DEFINE_integer,
    float: absl_flags.DEFINE_float,
    bool: absl_flags.DEFINE_bool,
    str: absl_flags.DEFINE_string,
  }
  holders = {name: define[kind](name, None, help_text) for name, kind, help_text in FLAGS}
  return lambda: {name: holder.value for name, holder in holders.items() if holder.value is not None}


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


MBR_SOURCES = ('sample', 'beam')  # the choices of decode.mbr_source


def candidate_options(o: DecodeOptions) -> DecodeOptions:
  """The search that draws MBR candidates (o.mbr != 'none'): o.mbr_candidates samples with o's sampling settings, or
  the n-best of a beam of that width; without MBR, `o` itself."""
  if o.mbr == 'none':
    return o
  if o.mbr_source == 'sample':
    return dataclasses.replace(o, sample=True, num_samples=o.mbr_candidates)
  return dataclasses.replace(o, sample=False, beam_size=o.mbr_candidates)


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


def _init_state(init_state: PyTree, batch_size: int, beam_size: int, opts: ops.SearchOptions) -> BeamState:
  """Beam 0 alive (log-prob 0), the others -inf so hypotheses stay distinct."""
  shape = (batch_size, beam_size, opts.settings.max_len)
  live_logp_BxK = jnp.full((batch_size, beam_size), NEG_INF, jnp.float32)
  aux = {}
  if opts.source_mask_BxS is not None:
    cov_BxKxS = jnp.zeros((batch_size, beam_size) + opts.source_mask_BxS.shape[1:], jnp.float32)
    if opts.settings.coverage_beta > 0:
      aux['live_cov_BxKxS'] = cov_BxKxS
    if opts.settings.return_attention:
      attn_BxKxTxS = jnp.zeros(shape + cov_BxKxS.shape[2:], jnp.float32)
      aux.update(live_attn_BxKxTxS=attn_BxKxTxS, done_attn_BxKxTxS=attn_BxKxTxS)
  return BeamState(
    t=jnp.zeros((), jnp.int32),
    live_seqs_BxKxT=jnp.full(shape, opts.pad_id, jnp.int32),
    live_logp_BxK=live_logp_BxK.at[:, 0].set(0.0),
    done_seqs_BxKxT=jnp.full(shape, opts.pad_id, jnp.int32),
    done_score_BxK=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
    dec_state=ops.tile_beams(init_state, beam_size),
    **aux,
  )


def _top_candidates(
  total_BxKxV: jax.Array, live_seqs_BxKxT: jax.Array, t: jax.Array, num_candidates: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Best extensions over all beams: (logp, seqs, token, parent beam)."""
  batch_size, _, vocab_size = total_BxKxV.shape
  logp_BxM, flat_idx_BxM = ops.top_k(total_BxKxV.reshape(batch_size, -1), num_candidates)
  parent_BxM = flat_idx_BxM // vocab_size
  token_BxM = (flat_idx_BxM % vocab_size).astype(jnp.int32)
  seqs_BxMxT = ops.gather_beams(live_seqs_BxKxT, parent_BxM)
  seqs_BxMxT = seqs_BxMxT.at[:, :, t].set(token_BxM)
  return logp_BxM, seqs_BxMxT, token_BxM, parent_BxM


def _candidate_aux(
  state: BeamState, step_aux: dict[str, jax.Array], parent_BxM: jax.Array, opts: ops.SearchOptions
) -> dict[str, jax.Array]:
  """Coverage ('cov') and attention history ('attn') of each candidate."""
  if opts.source_mask_BxS is None:
    return {}
  # The attention that produced this step's token, zero on source padding.
  attn_BxKxS = step_aux['attention'].astype(jnp.float32) * opts.source_mask_BxS[:, None, :]
  aux = {}
  if state.live_cov_BxKxS is not None:
    aux['cov'] = ops.gather_beams(state.live_cov_BxKxS + attn_BxKxS, parent_BxM)
  if state.live_attn_BxKxTxS is not None:
    hist_BxKxTxS = state.live_attn_BxKxTxS.at[:, :, state.t].set(attn_BxKxS)
    aux['attn'] = ops.gather_beams(hist_BxKxTxS, parent_BxM)
  return aux


def _merge_done(
  done_score_BxK: jax.Array, done: PyTree, new_score_BxK: jax.Array, new: PyTree
) -> tuple[jax.Array, PyTree]:
  """Keeps the K best of old and new finished hypotheses (old first on ties)."""
  beam_size = done_score_BxK.shape[1]
  score_Bx2K = jnp.concatenate([done_score_BxK, new_score_BxK], axis=1)
  both = jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=1), done, new)
  score_BxK, idx_BxK = ops.top_k(score_Bx2K, beam_size)
  return score_BxK, ops.gather_beams(both, idx_BxK)


def _beam_step(state: BeamState, step_fn: StepFn, opts: ops.SearchOptions) -> BeamState:
  """One token for every hypothesis: grow, then split into done and live."""
  beam_size = state.live_logp_BxK.shape[1]
  logp_BxKxV, dec_state, step_aux = ops.next_log_probs(step_fn, state.live_seqs_BxKxT, state.t, state.dec_state, opts)
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
  new_score_BxK = logp_BxM[:, :beam_size] / ops.length_penalty(state.t + 1, opts.settings.length_alpha)
  if 'cov' in aux_BxM:
    new_score_BxK += ops.coverage_penalty(aux_BxM['cov'][:, :beam_size], opts)
  new_score_BxK = jnp.where(finishes_BxK, new_score_BxK, NEG_INF)
  new_done = {'seqs': seqs_BxMxT[:, :beam_size]}
  done = {'seqs': state.done_seqs_BxKxT}
  if 'attn' in aux_BxM:
    new_done['attn'] = aux_BxM['attn'][:, :beam_size]
    done['attn'] = state.done_attn_BxKxTxS
  done_score_BxK, done = _merge_done(state.done_score_BxK, done, new_score_BxK, new_done)
  live_logp_BxK, live_idx_BxK = ops.top_k(jnp.where(is_eos_BxM, NEG_INF, logp_BxM), beam_size)
  parent_BxK = jnp.take_along_axis(parent_BxM, live_idx_BxK, axis=1)
  live = ops.gather_beams({'seqs': seqs_BxMxT, **aux_BxM}, live_idx_BxK)
  return BeamState(
    t=state.t + 1,
    live_seqs_BxKxT=live['seqs'],
    live_logp_BxK=live_logp_BxK,
    done_seqs_BxKxT=done['seqs'],
    done_score_BxK=done_score_BxK,
    dec_state=ops.gather_beams(dec_state, parent_BxK),
    live_cov_BxKxS=live.get('cov'),
    live_attn_BxKxTxS=live.get('attn'),
    done_attn_BxKxTxS=done.get('attn'),
  )


def _not_finished(state: BeamState, opts: ops.SearchOptions) -> jax.Array:
  """False at max_len or once every row is finished (see the bound below)."""
  # Log-probs only decrease and cp <= 0, so a live beam's best possible final
  # score is its log-prob over the largest penalty among the reachable lengths.
  max_len, alpha = opts.settings.max_len, opts.settings.length_alpha
  max_penalty = jnp.maximum(ops.length_penalty(state.t + 1, alpha), ops.length_penalty(max_len, alpha))
  best_bound_B = jnp.max(state.live_logp_BxK, axis=1) / max_penalty
  worst_done_B = jnp.min(state.done_score_BxK, axis=1)
  # With an empty done slot (-inf) a row finishes only when no beam is alive.
  row_finished_B = best_bound_B <= worst_done_B
  return (state.t < max_len) & ~jnp.all(row_finished_B)


def _finalize(state: BeamState, opts: ops.SearchOptions) -> tuple[jax.Array, ...]:
  """Done hypotheses, or live ones for rows that never finished; best first."""
  beam_size = state.done_score_BxK.shape[1]
  has_done_B = jnp.max(state.done_score_BxK, axis=1) > NEG_INF
  fallback_BxK = state.live_logp_BxK / ops.length_penalty(opts.settings.max_len, opts.settings.length_alpha)
  if state.live_cov_BxKxS is not None:  # dead slots may hold NaN coverage
    fallback_BxK = jnp.where(
      fallback_BxK > NEG_INF, fallback_BxK + ops.coverage_penalty(state.live_cov_BxKxS, opts), NEG_INF
    )
  # None leaves (no attention kept) are empty subtrees and pass through.
  done = (state.done_score_BxK, state.done_seqs_BxKxT, state.done_attn_BxKxTxS)
  live = (fallback_BxK, state.live_seqs_BxKxT, state.live_attn_BxKxTxS)
  pick = lambda d, l: jnp.where(ops.expand_as(has_done_B, d), d, l)
  scores_BxK, *out = jax.tree.map(pick, done, live)
  scores_BxK, order_BxK = ops.top_k(scores_BxK, beam_size)
  seqs_BxKxT, attn_BxKxTxS = ops.gather_beams(out, order_BxK)
  valid_BxK = scores_BxK > NEG_INF
  seqs_BxKxT = jnp.where(ops.expand_as(valid_BxK, seqs_BxKxT), seqs_BxKxT, opts.pad_id)
  if attn_BxKxTxS is not None:  # NaN-safe: dead slots may hold anything
    attn_BxKxTxS = jnp.where(ops.expand_as(valid_BxK, attn_BxKxTxS), attn_BxKxTxS, 0.0)
  return (seqs_BxKxT.astype(jnp.int32), scores_BxK.astype(jnp.float32), attn_BxKxTxS)


def beam_search(
  step_fn: StepFn,
  init_state: PyTree,
  options: DecodeOptions,
  *,
  batch_size: int,
  bos_id: int,
  eos_id: int,
  pad_id: int = 0,
  row_max_len: jax.Array | None = None,
  source_mask: jax.Array | None = None,
) -> tuple[Any, ...]:
  """Beam search over `step_fn` with `options` (beam_size 1 is greedy decoding).

  Static shapes throughout (one `lax.while_loop`), so it can be jitted with
  `functools.partial(beam_search, step_fn, options=..., batch_size=..., ...)`
  and reused for new `init_state`, `row_max_len` and `source_mask` values
  without retracing. The module docstring states the output contract (sort
  order, EOS/PAD layout, scores, masks).

  Args:
    step_fn: `(ids int32[N], state) -> (logits [N, V], new_state[, aux])`
      with `N = batch_size * beam_size`; state and aux leaves are `[N, ...]`.
      The first call gets `bos_id` in every row. Logits may be any float dtype.
    init_state: decoder state, every leaf `[batch_size, ...]`, tiled to beams
      inside as `expand_to_beams` tiles. Coverage and `return_attention` need a
      step function that also returns `{'attention': [N, S]}`, the attention
      behind the token it scores.
    options: the settings (static; a change recompiles). Read here: beam_size
      (K; may exceed the vocabulary: surplus slots come back as -inf), max_len
      (T, the most tokens per hypothesis, EOS included; resolved, > 0),
      length_alpha (GNMT length-penalty exponent; 0 means raw log-prob sums),
      min_len (no EOS while fewer tokens were emitted), no_repeat_ngram_size
      (n, 0 = off; no n-gram occurs twice), coverage_beta (GNMT
      coverage-penalty weight, 0 = off) and return_attention.
    batch_size: B.
    bos_id, eos_id, pad_id: fed first (never output); ends a hypothesis; fills
      the output after EOS (never generated).
    row_max_len: optional int32 `[B]` limit on |y| (EOS included), clipped to
      `[min_len + 1, max_len]`; below `max_len` a row must emit EOS there.
    source_mask: `[B, S]`, 1 on real source positions (coverage,
      return_attention).

  Returns:
    `(seqs int32[B, K, max_len], scores float32[B, K])`, best FIRST per row,
    plus, with `options.return_attention`, `{'attention': float32[B, K,
    max_len, S]}` behind every returned token (zero after EOS, on padding and
    in empty slots).
  """
  ops.check_args(init_state, options, batch_size=batch_size, eos_id=eos_id, pad_id=pad_id, row_max_len=row_max_len)
  ops.check_beam_options(step_fn, init_state, source_mask, options, batch_size=batch_size)
  attention = options.coverage_beta > 0 or options.return_attention
  opts = ops.search_options(
    options,
    bos_id=bos_id,
    eos_id=eos_id,
    pad_id=pad_id,
    row_max_len=row_max_len,
    source_mask=source_mask if attention else None,
  )
  state = _init_state(init_state, batch_size, options.beam_size, opts)
  state = lax.while_loop(lambda s: _not_finished(s, opts), lambda s: _beam_step(s, step_fn, opts), state)
  seqs_BxKxT, scores_BxK, attn_BxKxTxS = _finalize(state, opts)
  if options.return_attention:
    return seqs_BxKxT, scores_BxK, {'attention': attn_BxKxTxS}
  return seqs_BxKxT, scores_BxK
