"""Ancestral sampling (temperature, top-k, nucleus) over the same StepFn contract as decode.beam_search.

Rows are tiled like beams and masked by the same rules (PAD never drawn, min_len, per-row length limits); see the
contracts in s2s_jax/decode.py.
"""

# pylint: disable=invalid-name
import dataclasses

import jax
from jax import lax
import jax.numpy as jnp

from s2s_jax import decode
from s2s_jax import search_ops as ops
from s2s_jax.search_ops import NEG_INF
from s2s_jax.search_ops import PyTree
from s2s_jax.search_ops import StepFn


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _SampleState:
  """Loop carry of `sample`."""

  t: jax.Array  # [] int32
  seqs_BxKxT: jax.Array  # int32, pad after EOS
  logp_BxK: jax.Array  # float32, summed untempered log-probs
  alive_BxK: jax.Array  # bool, no EOS yet
  dec_state: PyTree  # every leaf [B, K, ...]


def _sample_tokens(
  rng_B: jax.Array, logp_BxKxV: jax.Array, *, temperature: float, top_k: int, top_p: float, epsilon: float = 0.0
) -> jax.Array:
  """Draws from softmax(logp / temperature) cut to top_k, then to top_p, then to the tokens of probability at least
  epsilon (the most likely always kept); row b's K draws from its key rng_B[b]."""
  if temperature == 0:  # the limit: greedy
    return jnp.argmax(logp_BxKxV, axis=-1).astype(jnp.int32)
  logits_BxKxC, idx_BxKxC = logp_BxKxV / temperature, None
  if top_k > 0 or top_p < 1.0:  # C candidates, most likely first
    vocab_size = logp_BxKxV.shape[-1]
    logits_BxKxC, idx_BxKxC = ops.top_k(logits_BxKxC, min(top_k or vocab_size, vocab_size))
  if top_p < 1.0:  # nucleus: keep tokens whose more likely ones hold < top_p
    probs_BxKxC = jax.nn.softmax(logits_BxKxC, axis=-1)
    before_BxKxC = jnp.cumsum(probs_BxKxC, axis=-1) - probs_BxKxC
    keep_BxKxC = (before_BxKxC < top_p).at[..., 0].set(True)
    logits_BxKxC = jnp.where(keep_BxKxC, logits_BxKxC, NEG_INF)
  if epsilon > 0:  # epsilon sampling (Hewitt et al. 2022): drop the tokens below epsilon of the distribution so far
    probs_BxKxC = jax.nn.softmax(logits_BxKxC, axis=-1)
    keep_BxKxC = (probs_BxKxC >= epsilon) | (probs_BxKxC == probs_BxKxC.max(axis=-1, keepdims=True))
    logits_BxKxC = jnp.where(keep_BxKxC, logits_BxKxC, NEG_INF)
  # Per row, so that a row's draws depend on its own key only (not on the batch around it).
  choice_BxK = jax.vmap(lambda key, logits_KxC: jax.random.categorical(key, logits_KxC, axis=-1))(rng_B, logits_BxKxC)
  if idx_BxKxC is not None:
    choice_BxK = jnp.take_along_axis(idx_BxKxC, choice_BxK[..., None], axis=-1)[..., 0]
  return choice_BxK.astype(jnp.int32)


def _sample_step(state: _SampleState, step_fn: StepFn, rng_B: jax.Array, opts: ops.SearchOptions) -> _SampleState:
  """One token for every unfinished sample; PAD after EOS. `rng_B`: this step's key of every row."""
  o = opts.settings
  logp_BxKxV, dec_state, _ = ops.next_log_probs(step_fn, state.seqs_BxKxT, state.t, state.dec_state, opts)
  token_BxK = _sample_tokens(
    rng_B, logp_BxKxV, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, epsilon=o.epsilon
  )
  token_logp_BxK = jnp.take_along_axis(logp_BxKxV, token_BxK[..., None], axis=-1)[..., 0]
  # Only when every allowed token has probability 0: end there, score -inf.
  token_BxK = jnp.where(token_logp_BxK > NEG_INF, token_BxK, opts.eos_id)
  token_BxK = jnp.where(state.alive_BxK, token_BxK, opts.pad_id)
  return _SampleState(
    t=state.t + 1,
    seqs_BxKxT=state.seqs_BxKxT.at[:, :, state.t].set(token_BxK),
    logp_BxK=state.logp_BxK + jnp.where(state.alive_BxK, token_logp_BxK, 0.0),
    alive_BxK=state.alive_BxK & (token_BxK != opts.eos_id),
    dec_state=dec_state,
  )


def row_keys(rng: jax.Array, batch_size: int) -> jax.Array:
  """One key per batch row: `rng` itself when it holds one per row ([B] keys), else fold_in(rng, b) for row b."""
  typed = jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
  if rng.ndim == (0 if typed else 1):
    return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(batch_size))
  if rng.ndim != (1 if typed else 2) or rng.shape[0] != batch_size:
    raise ValueError(f'rng has shape {rng.shape}: expected one key, or one key per batch row ({batch_size} rows).')
  return rng


def sample(
  step_fn: StepFn,
  init_state: PyTree,
  rng: jax.Array,
  options: decode.DecodeOptions,
  *,
  batch_size: int,
  bos_id: int,
  eos_id: int,
  pad_id: int = 0,
  row_max_len: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Ancestral sampling over `step_fn` with `options` (same contract as `beam_search`).

  Each batch row is tiled `num_samples` times as beams are (close over
  `expand_to_beams(..., num_samples)`). Every step draws from
  `softmax(logp / temperature)` restricted to the `top_k` most likely tokens
  (0 = all) and then to the smallest most-likely-first set whose (tempered,
  top-k renormalized) probability reaches `top_p`, and then to the tokens
  whose probability in what remains is at least `epsilon`; the most likely
  token is always kept. PAD is never drawn; `min_len` and `row_max_len` mask as in
  `beam_search` (repeated n-grams are not banned). A sample stops at EOS (PAD
  after it) or at `max_len`. The draws of batch row b depend only on its key
  (folded in with the step) and its own log-probabilities, so they are
  reproducible and do not depend on the other rows of the batch.

  Args:
    step_fn, init_state, batch_size, bos_id, eos_id, pad_id, row_max_len: as
      in `beam_search`.
    rng: one PRNG key per batch row ([B] keys; what makes a row's samples
      independent of its batch), or one key (row b draws from fold_in(rng, b)).
    options: the settings (static). Read here: num_samples (samples per batch
      row), temperature (> 0 divides the log-probs; 0 means argmax, greedy),
      top_k (keep the k most likely tokens; 0 keeps all), top_p (nucleus mass
      in (0, 1]; 1 keeps all), epsilon (drop tokens below it; 0 keeps all), max_len and min_len (as in `beam_search`).

  Returns:
    `(seqs int32[B, num_samples, max_len], scores float32[B, num_samples])` in
    sample order; a score is the sum of the model's own UNtempered log-probs
    of the sampled tokens (EOS included), not length-normalized. A sample
    whose allowed tokens all have probability 0 ends there with EOS, -inf.
  """
  o = options
  ops.check_args(
    init_state, o, batch_size=batch_size, eos_id=eos_id, pad_id=pad_id, row_max_len=row_max_len, rows_name='num_samples'
  )
  for name, value, ok, want in [
    ('temperature', o.temperature, o.temperature >= 0, '>= 0'),
    ('top_k', o.top_k, o.top_k >= 0, '>= 0'),
    ('top_p', o.top_p, 0 < o.top_p <= 1, 'in (0, 1]'),
    ('epsilon', o.epsilon, 0 <= o.epsilon < 1, 'in [0, 1)'),
  ]:
    if not ok:
      raise ValueError(f'{name}={value} must be {want}.')
  settings = dataclasses.replace(o, no_repeat_ngram_size=0)  # sampling bans no n-grams (mask_tokens reads it)
  opts = ops.search_options(
    settings, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id, row_max_len=row_max_len, source_mask=None
  )
  rng_B = row_keys(rng, batch_size)
  shape = (batch_size, o.num_samples)
  state = _SampleState(
    t=jnp.zeros((), jnp.int32),
    seqs_BxKxT=jnp.full(shape + (o.max_len,), pad_id, jnp.int32),
    logp_BxK=jnp.zeros(shape, jnp.float32),
    alive_BxK=jnp.ones(shape, bool),
    dec_state=ops.tile_beams(init_state, o.num_samples),
  )
  state = lax.while_loop(
    lambda s: (s.t < o.max_len) & jnp.any(s.alive_BxK),
    lambda s: _sample_step(s, step_fn, jax.vmap(jax.random.fold_in, in_axes=(0, None))(rng_B, s.t), opts),
    state,
  )
  return state.seqs_BxKxT, state.logp_BxK
