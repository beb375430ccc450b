"""What the decoders (decode.beam_search, sampling.sample) share: the step-function call, the token masks (PAD,
min_len, row limits, repeated n-grams), beam tiling and gathers, top-k, the GNMT penalties and argument checks.
The contracts are in decode.py's docstring.
"""

# pylint: disable=invalid-name
from collections.abc import Callable
from collections.abc import Mapping
import dataclasses
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

PyTree = Any
StepFn = Callable[[jax.Array, PyTree], tuple[jax.Array, PyTree]]

NEG_INF = float('-inf')
COVERAGE_FLOOR = 1e-6  # smallest coverage inside the log of the penalty


@dataclasses.dataclass(frozen=True)
class SearchOptions:
  """One search call: its settings (`settings`, the decode.DecodeOptions it was given; decode imports this module),
  the special ids and the traced per-row inputs they need."""

  settings: Any
  bos_id: int
  eos_id: int
  pad_id: int = 0
  row_limit_B: jax.Array | None = None  # int32 in [min_len + 1, max_len]
  source_mask_BxS: jax.Array | None = None  # float32; set when coverage or return_attention needs attention


def tile_beams(tree: PyTree, beam_size: int) -> PyTree:
  """[B, ...] -> [B, K, ...] (each row copied K times)."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], beam_size) + x.shape[1:]), tree)


def flatten_beams(tree: PyTree) -> PyTree:
  """[B, K, ...] -> [B*K, ...]."""
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def unflatten_beams(tree: PyTree, batch_size: int) -> PyTree:
  """[B*K, ...] -> [B, K, ...]."""
  return jax.tree.map(lambda x: x.reshape((batch_size, -1) + x.shape[1:]), tree)


def gather_beams(tree: PyTree, idx_BxM: jax.Array) -> PyTree:
  """Picks beams per batch row: leaves [B, K, ...] -> [B, M, ...]."""
  take = jax.vmap(lambda x, i: x[i])
  return jax.tree.map(lambda x: take(x, idx_BxM), tree)


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """lax.top_k behind an optimization barrier.

  Without it, XLA:CPU (jaxlib 0.10.2) rewrites a top_k whose values are later sliced into a full stable sort of
  the last axis: 85 ms instead of 0.75 ms for [64, 8000] (measured), which made a beam step 100x slower.
  """
  values, indices = lax.top_k(x, k)
  # One barrier per output: a barrier on the (values, indices) tuple crashes XLA's TopkDecomposer (seen on
  # pmapped CPU decoding with small inputs).
  return lax.optimization_barrier(values), lax.optimization_barrier(indices)


def length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
  """GNMT ((5 + length) / 6) ** alpha; exactly 1 when alpha == 0."""
  length = jnp.asarray(length, jnp.float32)
  return ((5.0 + length) / 6.0) ** alpha


def coverage_penalty(cov_BxMxS: jax.Array, opts: SearchOptions) -> jax.Array:
  """GNMT beta * sum_i log(min(cov_i, 1)) over real positions, floored."""
  log_cov_BxMxS = jnp.log(jnp.clip(cov_BxMxS, COVERAGE_FLOOR, 1.0))
  mask_Bx1xS = opts.source_mask_BxS[:, None, :]
  return opts.settings.coverage_beta * jnp.sum(log_cov_BxMxS * mask_Bx1xS, axis=-1)


def repeated_ngram_mask(seqs_BxKxT: jax.Array, t: jax.Array, n: int, vocab_size: int) -> jax.Array:
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


def mask_tokens(logp_BxKxV: jax.Array, seqs_BxKxT: jax.Array, t: jax.Array, opts: SearchOptions) -> jax.Array:
  """-inf for PAD and for whatever min_len, row limits and n-grams forbid."""
  settings = opts.settings
  logp_BxKxV = logp_BxKxV.at[..., opts.pad_id].set(NEG_INF)
  vocab_size = logp_BxKxV.shape[-1]
  if settings.min_len > 0:
    eos_BxK = jnp.where(t < settings.min_len, NEG_INF, logp_BxKxV[..., opts.eos_id])
    logp_BxKxV = logp_BxKxV.at[..., opts.eos_id].set(eos_BxK)
  if opts.row_limit_B is not None:
    # Rows limited to max_len keep the plain behaviour (fallback at the end).
    limit_B = opts.row_limit_B
    at_limit_Bx1x1 = ((t + 1 >= limit_B) & (limit_B < settings.max_len))[:, None, None]
    not_eos_1x1xV = (jnp.arange(vocab_size) != opts.eos_id)[None, None]
    logp_BxKxV = jnp.where(at_limit_Bx1x1 & not_eos_1x1xV, NEG_INF, logp_BxKxV)
  if settings.no_repeat_ngram_size > 0:
    banned_BxKxV = repeated_ngram_mask(seqs_BxKxT, t, settings.no_repeat_ngram_size, vocab_size)
    logp_BxKxV = jnp.where(banned_BxKxV, NEG_INF, logp_BxKxV)
  return logp_BxKxV


def call_step(step_fn: StepFn, ids_N: jax.Array, dec_state_N: PyTree) -> tuple[jax.Array, PyTree, dict[str, jax.Array]]:
  """(logits, new state, auxiliary outputs or {}) of one step-function call."""
  out = step_fn(ids_N, dec_state_N)
  return out if len(out) == 3 else (*out, {})


def next_log_probs(
  step_fn: StepFn, seqs_BxKxT: jax.Array, t: jax.Array, dec_state: PyTree, opts: SearchOptions
) -> tuple[jax.Array, PyTree, dict[str, jax.Array]]:
  """Runs the model on the last tokens: masked log-probs [B, K, V], state,
  auxiliary outputs [B, K, ...]."""
  batch_size = seqs_BxKxT.shape[0]
  prev_BxK = lax.dynamic_index_in_dim(seqs_BxKxT, jnp.maximum(t - 1, 0), axis=2, keepdims=False)
  ids_BxK = jnp.where(t == 0, opts.bos_id, prev_BxK).astype(jnp.int32)
  logits_NxV, dec_state_N, aux_N = call_step(step_fn, ids_BxK.reshape(-1), flatten_beams(dec_state))
  logp_NxV = jax.nn.log_softmax(logits_NxV.astype(jnp.float32), axis=-1)
  # Masking after log_softmax keeps scores equal to the model's log-probs.
  logp_BxKxV = mask_tokens(unflatten_beams(logp_NxV, batch_size), seqs_BxKxT, t, opts)
  return (logp_BxKxV, unflatten_beams(dec_state_N, batch_size), unflatten_beams(aux_N, batch_size))


def expand_as(x: jax.Array, like: jax.Array) -> jax.Array:
  """Appends unit axes to `x` up to the rank of `like` (for jnp.where)."""
  return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def check_args(
  init_state: PyTree,
  settings,
  *,
  batch_size: int,
  eos_id: int,
  pad_id: int,
  row_max_len: jax.Array | None,
  rows_name: str = 'beam_size',
) -> None:
  """Raises ValueError on arguments the static-shape loop cannot handle; `rows_name` names the setting that gives
  the rows per batch row (beam_size, or num_samples)."""
  rows, max_len, min_len = getattr(settings, rows_name), settings.max_len, settings.min_len
  if batch_size < 1 or rows < 1 or max_len < 1:
    raise ValueError(f'batch_size={batch_size}, {rows_name}={rows} and max_len={max_len} must all be >= 1.')
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


def check_beam_options(
  step_fn: StepFn, init_state: PyTree, source_mask: jax.Array | None, settings, *, batch_size: int
) -> None:
  """Coverage and return_attention need source_mask and the step function's
  auxiliary 'attention' output (checked on shapes, without running it)."""
  if settings.no_repeat_ngram_size < 0:
    raise ValueError(f'no_repeat_ngram_size={settings.no_repeat_ngram_size} must be >= 0.')
  if settings.coverage_beta < 0:
    raise ValueError(
      f'coverage_beta={settings.coverage_beta} must be >= 0 (the penalty must not reward lack of coverage).'
    )
  if not (settings.coverage_beta > 0 or settings.return_attention):
    return
  mask_shape = None if source_mask is None else jnp.shape(source_mask)
  if mask_shape is None or len(mask_shape) != 2 or (mask_shape[0] != batch_size):
    raise ValueError(
      'coverage_beta > 0 and return_attention need source_mask of shape '
      f'[batch_size={batch_size}, S], got {mask_shape}.'
    )
  rows = batch_size * settings.beam_size
  ids_N = jax.ShapeDtypeStruct((rows,), jnp.int32)
  state_N = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows,) + jnp.shape(x)[1:], jnp.result_type(x)), init_state)
  out = jax.eval_shape(step_fn, ids_N, state_N)
  shape = (rows, mask_shape[1])
  aux = out[2] if len(out) == 3 else None
  if not isinstance(aux, Mapping) or 'attention' not in aux or (aux['attention'].shape != shape):
    raise ValueError(
      'coverage_beta > 0 and return_attention need a step function returning '
      "(logits, state, {'attention': [N, S]}); expected the attention of "
      f'shape {shape}, got the outputs {out}.'
    )


def search_options(
  settings, *, bos_id: int, eos_id: int, pad_id: int, row_max_len: jax.Array | None, source_mask: jax.Array | None
) -> SearchOptions:
  """The settings plus the special ids, the row limits (clipped to [min_len + 1, max_len]) and the source mask."""
  if row_max_len is not None:  # min_len wins over a smaller row limit
    row_max_len = jnp.clip(jnp.asarray(row_max_len, jnp.int32), settings.min_len + 1, settings.max_len)
  if source_mask is not None:
    source_mask = jnp.asarray(source_mask, jnp.float32)
  return SearchOptions(settings, bos_id, eos_id, pad_id, row_max_len, source_mask)
