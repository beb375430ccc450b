"""Model-agnostic beam search; greedy decoding is beam search with beam size 1.

The decoder knows nothing about models. It calls a `StepFn`
`(ids_N, dec_state) -> (logits_NxV, dec_state)` once per emitted token, with
`N = B*K` rows laid out row-major: row `b*K + k` is beam `k` of batch row `b`.
Anything the model needs besides the recurrent state (encoder memory, masks)
is closed over by the step function, already tiled to `N` rows with
`expand_to_beams`, so it never enters the loop carry.

Search: every step extends each live hypothesis by every token and keeps the
top 2K of the K*V extensions. Those ending in EOS that rank among the top K
finish (fairseq's rule, so beam 1 with `length_alpha=0` is exactly greedy);
the best K that do not end in EOS stay live, so finishing never shrinks the
beam. The loop stops at `max_len`, or once no live hypothesis of any row can
beat that row's K-th finished one.

Contracts:
  * Outputs: `seqs_BxKxT` int32 (`T = max_len`) and `scores_BxK` float32,
    sorted best FIRST within each batch row.
  * A sequence excludes BOS, includes its EOS, and is padded with `pad_id` after
    it. The decoder never emits `pad_id` (its log-prob is forced to -inf, as in
    fairseq), so PAD appears only after EOS and `pad_id != eos_id` is required.
  * Score of a finished hypothesis `y`: `sum_t log p(y_t) / lp(|y|)` with
    `lp(L) = ((5 + L) / 6) ** length_alpha` (GNMT); `|y|` counts the EOS and
    `length_alpha = 0` means no normalization. Log-probs are the model's own
    (`log_softmax` in float32), not renormalized after masking PAD.
  * A batch row without any finished hypothesis at `max_len` returns its live
    hypotheses scored with `|y| = max_len` (they contain no EOS). A row with
    fewer than K finished hypotheses returns them plus empty slots: score -inf,
    all `pad_id`.

Shape suffixes: B batch, K beam, N = B*K, T = max_len, V vocab, M = 2K
candidates.
"""
# pylint: disable=invalid-name
from collections.abc import Callable
from typing import Any

import flax
import jax
from jax import lax
import jax.numpy as jnp

PyTree = Any
StepFn = Callable[[jax.Array, PyTree], tuple[jax.Array, PyTree]]

NEG_INF = float('-inf')


@flax.struct.dataclass
class BeamState:
  """Loop carry of `beam_search`; every array is per batch row and beam."""

  t: jax.Array  # [] int32, tokens emitted so far
  live_seqs_BxKxT: jax.Array  # int32, pad-filled; live hypotheses hold no EOS
  live_logp_BxK: jax.Array  # float32, summed log-probs; -inf marks a dead slot
  done_seqs_BxKxT: jax.Array  # int32, EOS included, pad after
  done_score_BxK: jax.Array  # float32, length-normalized; -inf = empty slot
  dec_state: PyTree  # every leaf [B, K, ...]


def expand_to_beams(tree: PyTree, beam_size: int) -> PyTree:
  """Tiles every leaf `[B, ...] -> [B*K, ...]`, row `b*K + k` = row `b`.

  Use it for whatever the step function closes over (encoder memory, masks),
  so that its rows line up with the `N = B*K` rows `beam_search` passes.

  Args:
    tree: pytree of arrays with leading dimension B.
    beam_size: K.

  Returns:
    The same pytree with every leaf repeated K times along axis 0.
  """
  return jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), tree)


def _tile_beams(tree: PyTree, beam_size: int) -> PyTree:
  """[B, ...] -> [B, K, ...] (each row copied K times)."""
  return jax.tree.map(
      lambda x: jnp.broadcast_to(
          x[:, None], (x.shape[0], beam_size) + x.shape[1:]), tree)


def _flatten_beams(tree: PyTree) -> PyTree:
  """[B, K, ...] -> [B*K, ...]."""
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def _unflatten_beams(tree: PyTree, batch_size: int) -> PyTree:
  """[B*K, ...] -> [B, K, ...]."""
  return jax.tree.map(
      lambda x: x.reshape((batch_size, -1) + x.shape[1:]), tree)


def _gather_beams(tree: PyTree, idx_BxM: jax.Array) -> PyTree:
  """Picks beams per batch row: leaves [B, K, ...] -> [B, M, ...]."""
  take = jax.vmap(lambda x, i: x[i])
  return jax.tree.map(lambda x: take(x, idx_BxM), tree)


def _length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
  """GNMT ((5 + length) / 6) ** alpha; exactly 1 when alpha == 0."""
  length = jnp.asarray(length, jnp.float32)
  return ((5.0 + length) / 6.0) ** alpha


def _init_state(init_state: PyTree, batch_size: int, beam_size: int,
                max_len: int, pad_id: int) -> BeamState:
  """Beam 0 alive (log-prob 0), the others -inf so hypotheses stay distinct."""
  shape = (batch_size, beam_size, max_len)
  live_logp_BxK = jnp.full((batch_size, beam_size), NEG_INF, jnp.float32)
  return BeamState(
      t=jnp.zeros((), jnp.int32),
      live_seqs_BxKxT=jnp.full(shape, pad_id, jnp.int32),
      live_logp_BxK=live_logp_BxK.at[:, 0].set(0.0),
      done_seqs_BxKxT=jnp.full(shape, pad_id, jnp.int32),
      done_score_BxK=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
      dec_state=_tile_beams(init_state, beam_size))


def _step_log_probs(step_fn: StepFn, state: BeamState, bos_id: int,
                    pad_id: int) -> tuple[jax.Array, PyTree]:
  """Runs the model: (summed log-probs [B, K, V], new state [B, K, ...])."""
  batch_size = state.live_logp_BxK.shape[0]
  prev_BxK = lax.dynamic_index_in_dim(
      state.live_seqs_BxKxT, jnp.maximum(state.t - 1, 0), axis=2,
      keepdims=False)
  ids_BxK = jnp.where(state.t == 0, bos_id, prev_BxK).astype(jnp.int32)
  logits_NxV, dec_state_N = step_fn(
      ids_BxK.reshape(-1), _flatten_beams(state.dec_state))
  logp_NxV = jax.nn.log_softmax(logits_NxV.astype(jnp.float32), axis=-1)
  # Masking after log_softmax keeps scores equal to the model's log-probs.
  logp_NxV = logp_NxV.at[:, pad_id].set(NEG_INF)
  logp_BxKxV = _unflatten_beams(logp_NxV, batch_size)
  live_logp_BxKx1 = state.live_logp_BxK[..., None]
  # Dead slots stay dead whatever the model returns for their (arbitrary) ids.
  total_BxKxV = jnp.where(
      live_logp_BxKx1 > NEG_INF, logp_BxKxV + live_logp_BxKx1, NEG_INF)
  return total_BxKxV, _unflatten_beams(dec_state_N, batch_size)


def _top_candidates(
    total_BxKxV: jax.Array, live_seqs_BxKxT: jax.Array, t: jax.Array,
    num_candidates: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Best extensions over all beams: (logp, seqs, token, parent beam)."""
  batch_size, _, vocab_size = total_BxKxV.shape
  logp_BxM, flat_idx_BxM = lax.top_k(
      total_BxKxV.reshape(batch_size, -1), num_candidates)
  parent_BxM = flat_idx_BxM // vocab_size
  token_BxM = (flat_idx_BxM % vocab_size).astype(jnp.int32)
  seqs_BxMxT = _gather_beams(live_seqs_BxKxT, parent_BxM)
  seqs_BxMxT = seqs_BxMxT.at[:, :, t].set(token_BxM)
  return logp_BxM, seqs_BxMxT, token_BxM, parent_BxM


def _merge_done(state: BeamState, new_score_BxK: jax.Array,
                new_seqs_BxKxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keeps the K best of old and new finished hypotheses (old first on ties)."""
  beam_size = state.done_score_BxK.shape[1]
  score_Bx2K = jnp.concatenate([state.done_score_BxK, new_score_BxK], axis=1)
  seqs_Bx2KxT = jnp.concatenate(
      [state.done_seqs_BxKxT, new_seqs_BxKxT], axis=1)
  score_BxK, idx_BxK = lax.top_k(score_Bx2K, beam_size)
  return _gather_beams(seqs_Bx2KxT, idx_BxK), score_BxK


def _beam_step(state: BeamState, step_fn: StepFn, *, bos_id: int, eos_id: int,
               pad_id: int, length_alpha: float) -> BeamState:
  """One token for every hypothesis: grow, then split into done and live."""
  beam_size = state.live_logp_BxK.shape[1]
  total_BxKxV, dec_state = _step_log_probs(step_fn, state, bos_id, pad_id)
  # 2K candidates hold at least K non-EOS ones (one EOS per parent at most).
  num_candidates = min(2 * beam_size, total_BxKxV.shape[1] *
                       total_BxKxV.shape[2])
  logp_BxM, seqs_BxMxT, token_BxM, parent_BxM = _top_candidates(
      total_BxKxV, state.live_seqs_BxKxT, state.t, num_candidates)
  is_eos_BxM = token_BxM == eos_id
  # As in fairseq, only EOS among the top K extensions finishes (so beam 1 is
  # exactly greedy); a dead (-inf) slot that picks EOS never finishes.
  finishes_BxK = (is_eos_BxM & (logp_BxM > NEG_INF))[:, :beam_size]
  new_score_BxK = jnp.where(
      finishes_BxK,
      logp_BxM[:, :beam_size] / _length_penalty(state.t + 1, length_alpha),
      NEG_INF)
  done_seqs_BxKxT, done_score_BxK = _merge_done(
      state, new_score_BxK, seqs_BxMxT[:, :beam_size])
  live_logp_BxK, live_idx_BxK = lax.top_k(
      jnp.where(is_eos_BxM, NEG_INF, logp_BxM), beam_size)
  parent_BxK = jnp.take_along_axis(parent_BxM, live_idx_BxK, axis=1)
  return BeamState(
      t=state.t + 1,
      live_seqs_BxKxT=_gather_beams(seqs_BxMxT, live_idx_BxK),
      live_logp_BxK=live_logp_BxK,
      done_seqs_BxKxT=done_seqs_BxKxT,
      done_score_BxK=done_score_BxK,
      dec_state=_gather_beams(dec_state, parent_BxK))


def _not_finished(state: BeamState, *, max_len: int,
                  length_alpha: float) -> jax.Array:
  """False at max_len or once every row is finished (see the bound below)."""
  # Log-probs only decrease, so a live beam's best possible final score is its
  # log-prob over the largest penalty among the lengths still reachable.
  max_penalty = jnp.maximum(_length_penalty(state.t + 1, length_alpha),
                            _length_penalty(max_len, length_alpha))
  best_bound_B = jnp.max(state.live_logp_BxK, axis=1) / max_penalty
  worst_done_B = jnp.min(state.done_score_BxK, axis=1)
  # With an empty done slot (-inf) a row finishes only when no beam is alive.
  row_finished_B = best_bound_B <= worst_done_B
  return (state.t < max_len) & ~jnp.all(row_finished_B)


def _finalize(state: BeamState, *, max_len: int, pad_id: int,
              length_alpha: float) -> tuple[jax.Array, jax.Array]:
  """Done hypotheses, or live ones for rows that never finished; best first."""
  beam_size = state.done_score_BxK.shape[1]
  has_done_Bx1 = jnp.max(state.done_score_BxK, axis=1, keepdims=True) > NEG_INF
  fallback_BxK = state.live_logp_BxK / _length_penalty(max_len, length_alpha)
  scores_BxK = jnp.where(has_done_Bx1, state.done_score_BxK, fallback_BxK)
  seqs_BxKxT = jnp.where(has_done_Bx1[..., None], state.done_seqs_BxKxT,
                         state.live_seqs_BxKxT)
  scores_BxK, order_BxK = lax.top_k(scores_BxK, beam_size)
  seqs_BxKxT = _gather_beams(seqs_BxKxT, order_BxK)
  seqs_BxKxT = jnp.where(scores_BxK[..., None] > NEG_INF, seqs_BxKxT, pad_id)
  return seqs_BxKxT.astype(jnp.int32), scores_BxK.astype(jnp.float32)


def _check_args(init_state: PyTree, *, batch_size: int, beam_size: int,
                max_len: int, eos_id: int, pad_id: int) -> None:
  """Raises ValueError on arguments the static-shape loop cannot handle."""
  if batch_size < 1 or beam_size < 1 or max_len < 1:
    raise ValueError(f'batch_size={batch_size}, beam_size={beam_size} and '
                     f'max_len={max_len} must all be >= 1.')
  if pad_id == eos_id:
    raise ValueError(f'pad_id and eos_id must differ, both are {pad_id}.')
  for path, leaf in jax.tree_util.tree_leaves_with_path(init_state):
    if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != batch_size:
      raise ValueError(
          f'init_state leaf {jax.tree_util.keystr(path)} has shape '
          f'{jnp.shape(leaf)}; every leaf needs leading dimension '
          f'batch_size={batch_size}.')


def beam_search(step_fn: StepFn, init_state: PyTree, *, batch_size: int,
                beam_size: int, max_len: int, bos_id: int, eos_id: int,
                pad_id: int = 0,
                length_alpha: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Beam search over `step_fn`; `beam_size=1` is greedy decoding.

  Static shapes throughout (one `lax.while_loop`), so it can be jitted with
  `functools.partial(beam_search, step_fn, batch_size=..., ...)` and reused for
  new `init_state` values without retracing. The module docstring states the
  output contract (sort order, EOS/PAD layout, scores).

  Args:
    step_fn: `(ids int32[N], state) -> (logits [N, V], new_state)` with
      `N = batch_size * beam_size`; state leaves are `[N, ...]`. The first call
      gets `bos_id` in every row. Logits may be any float dtype.
    init_state: decoder state, every leaf `[batch_size, ...]`; tiled to beams
      inside (rows ordered as `expand_to_beams` orders them).
    batch_size: B.
    beam_size: K; may exceed the vocabulary (surplus slots come back as -inf).
    max_len: T, the most tokens per hypothesis, EOS included.
    bos_id: id fed at the first step; never part of the output.
    eos_id: id that ends a hypothesis.
    pad_id: id filling the output after EOS; never generated.
    length_alpha: GNMT length-penalty exponent; 0 means raw log-prob sums.

  Returns:
    `(seqs int32[B, K, max_len], scores float32[B, K])`, best FIRST per row.
  """
  _check_args(init_state, batch_size=batch_size, beam_size=beam_size,
              max_len=max_len, eos_id=eos_id, pad_id=pad_id)
  state = _init_state(init_state, batch_size, beam_size, max_len, pad_id)
  state = lax.while_loop(
      lambda s: _not_finished(s, max_len=max_len, length_alpha=length_alpha),
      lambda s: _beam_step(s, step_fn, bos_id=bos_id, eos_id=eos_id,
                           pad_id=pad_id, length_alpha=length_alpha),
      state)
  return _finalize(state, max_len=max_len, pad_id=pad_id,
                   length_alpha=length_alpha)
