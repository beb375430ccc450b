"""Attention scores over an encoder memory, with masking, and the table of valid decoder combinations.

Scores e(q, k_s) for a query q (a decoder state) and encoder states k_s:
  additive    v' tanh(W_q q + b + W_k k_s)            Bahdanau et al. 2015 (with the bias most implementations add)
  concat      v' tanh(W [q; k_s]) = v' tanh(W_q q + W_k k_s)   Luong et al. 2015's name for the same form, no bias
  dot         q' k_s                                  Luong et al. 2015
  scaled_dot  q' k_s / sqrt(d)                        Vaswani et al. 2017's scaling
  general     q' W k_s                                Luong et al. 2015
  location    (W q)_s                                 Luong et al. 2015: from the query alone; needs a fixed max length
`dot` and `scaled_dot` need equal query and key sizes: the memory is projected to the query size when it differs
(a bidirectional encoder). Every key-side matmul is time-independent, so `keys` computes it once per source
sentence (in `encode`) and each decoder step only does the query side.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

FLOWS = ('none_init', 'none_concat', 'bahdanau', 'luong')
SCORES = ('additive', 'dot', 'general', 'concat', 'location', 'scaled_dot')
NO_ATTENTION = ('none_init', 'none_concat')

# (model.attention, model.attention_score, model.input_feeding). Baselines without attention ignore the score
# (None here); input feeding exists only in the Luong flow, where the query is the current state.
VALID_COMBINATIONS: tuple[tuple[str, str | None, bool], ...] = (
  ('none_init', None, False),
  ('none_concat', None, False),
  *(('bahdanau', score, False) for score in SCORES),
  *(('luong', score, feed) for score in SCORES for feed in (False, True)),
)


def check_score(score: str) -> None:
  """Raises ValueError naming the choices unless `score` is one of SCORES."""
  if score not in SCORES:
    raise ValueError(f'model.attention_score={score!r} is not one of {SCORES}.')


def check_combination(attention: str, score: str, input_feeding: bool) -> None:
  """Raises ValueError naming the valid choices unless the flow, the score and input feeding are each valid and
  their combination is in VALID_COMBINATIONS (the one check of model.attention, attention_score, input_feeding)."""
  if attention not in FLOWS:
    raise ValueError(f'model.attention={attention!r} is not one of {FLOWS}.')
  check_score(score)
  key = (attention, None if attention in NO_ATTENTION else score, bool(input_feeding))
  if key not in VALID_COMBINATIONS:
    valid = sorted({f'{a}/{s or "-"}/feed={f}' for a, s, f in VALID_COMBINATIONS if a == attention})
    raise ValueError(
      f'model.input_feeding={input_feeding} is not valid with model.attention={attention!r}: '
      f'input feeding exists only in the luong flow. Valid for {attention!r}: {valid}.'
    )


def _additive_pre(keys_BxSxA, query_BxNxA, coverage_BxNxS, w_cov_A):
  pre = keys_BxSxA[:, None] + query_BxNxA[:, :, None]
  if coverage_BxNxS is not None:
    pre = pre + coverage_BxNxS[..., None] * w_cov_A[None, None, None]
  return pre


@jax.custom_vjp
def additive_energies(
  keys_BxSxA: jax.Array,
  query_BxNxA: jax.Array,
  v_A: jax.Array,
  coverage_BxNxS: jax.Array | None = None,
  w_cov_A: jax.Array | None = None,
) -> jax.Array:
  """e[b, n, s] = v' tanh(keys[b, s] + query[b, n] (+ coverage[b, n, s] w_cov)): the additive / concat energies of
  N queries per example ([B, N, S]).

  The backward pass recomputes the tanh instead of keeping it: autodiff would keep tanh and its derivative, two
  [B, S, A] arrays per decoder step, which the scanned decoder stacks over the target ([T, B, S, A], hundreds of MB
  to allocate, fill and read back at translation sizes).
  """
  return jnp.einsum('bnsa,a->bns', jnp.tanh(_additive_pre(keys_BxSxA, query_BxNxA, coverage_BxNxS, w_cov_A)), v_A)


def _additive_energies_fwd(keys, query, v, coverage, w_cov):
  return additive_energies(keys, query, v, coverage, w_cov), (keys, query, v, coverage, w_cov)


def _additive_energies_bwd(residuals, de_BxNxS):
  keys, query, v, coverage, w_cov = residuals
  hidden = jnp.tanh(_additive_pre(keys, query, coverage, w_cov))
  dv = jnp.einsum('bns,bnsa->a', de_BxNxS, hidden)
  dpre = de_BxNxS[..., None] * v[None, None, None] * (1.0 - hidden * hidden)
  if coverage is None:
    d_cov = d_w_cov = None
  else:
    d_cov, d_w_cov = jnp.einsum('bnsa,a->bns', dpre, w_cov), jnp.einsum('bnsa,bns->a', dpre, coverage)
  return dpre.sum(axis=1), dpre.sum(axis=2), dv, d_cov, d_w_cov


additive_energies.defvjp(_additive_energies_fwd, _additive_energies_bwd)


class Attention(nn.Module):
  """One attention mechanism: `keys(memory)` once per sentence, then `__call__(query, ...)` per decoder step."""

  score: str
  query_dim: int
  attention_dim: int  # hidden size of the additive / concat scorer
  max_src_len: int = 0  # the fixed source length of the `location` score
  coverage: bool = False  # additive / concat: the coverage vector (summed past weights) joins the score
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    check_score(self.score)  # a module built outside a validated config (tests) fails as the config would
    dense = lambda n, bias=False: nn.Dense(n, use_bias=bias, dtype=self.dtype)
    if self.score in ('additive', 'concat'):
      self.key = dense(self.attention_dim)
      self.query = dense(self.attention_dim, bias=self.score == 'additive')
      self.energy = dense(1)
      if self.coverage:
        self.coverage_proj = dense(self.attention_dim)
    elif self.score == 'general':
      self.key = dense(self.query_dim)
    elif self.score in ('dot', 'scaled_dot'):
      self.key = dense(self.query_dim)  # used only when the memory size differs from the query size
    else:
      self.location = nn.Dense(self.max_src_len, dtype=self.dtype)

  def _kernel(self, dense: nn.Dense, in_features: int) -> jax.Array:
    """A Dense layer's kernel in the compute dtype, read directly (created first under init)."""
    if self.is_initializing():
      dense(jnp.zeros((1, in_features), self.dtype))
    return jnp.asarray(dense.variables['params']['kernel'], self.dtype)

  def keys(self, memory_BxSxD: jax.Array) -> jax.Array:
    """The time-independent key side of the score, computed once per source sentence."""
    if self.score == 'location':
      return memory_BxSxD[..., :0]  # the location score does not look at the memory
    if self.score in ('dot', 'scaled_dot') and memory_BxSxD.shape[-1] == self.query_dim:
      return memory_BxSxD
    return self.key(memory_BxSxD)

  def scores(self, query: jax.Array, keys_BxSxA: jax.Array, coverage_BxS: jax.Array | None = None) -> jax.Array:
    """Scores [B, S] of one query per example [B, Q] (a decoder step), or [B, N, S] of N queries [B, N, Q] (all
    target steps of teacher forcing)."""
    one = query.ndim == 2
    if self.score in ('additive', 'concat'):
      q_BxNxA = self.query(query[:, None] if one else query)
      cov = w_cov = None
      if self.coverage:
        w_cov = self._kernel(self.coverage_proj, 1)[0]
        cov = jnp.broadcast_to(coverage_BxS[:, None].astype(q_BxNxA.dtype), q_BxNxA.shape[:2] + keys_BxSxA.shape[1:2])
      e = additive_energies(keys_BxSxA, q_BxNxA, self._kernel(self.energy, self.attention_dim)[:, 0], cov, w_cov)
      return e[:, 0] if one else e
    if self.score in ('dot', 'general', 'scaled_dot'):
      e = jnp.einsum('bq,bsq->bs' if one else 'bnq,bsq->bns', query, keys_BxSxA)
      return e / jnp.sqrt(jnp.asarray(self.query_dim, e.dtype)) if self.score == 'scaled_dot' else e
    src_len = keys_BxSxA.shape[1]
    if src_len > self.max_src_len:
      raise ValueError(
        f'The location score was built for sources of at most {self.max_src_len} steps, '
        f'got {src_len}; raise data.max_src_len.'
      )
    return self.location(query)[..., :src_len]

  def __call__(
    self,
    query: jax.Array,
    keys_BxSxA: jax.Array,
    values_BxSxD: jax.Array,
    mask_BxS: jax.Array,
    coverage_BxS: jax.Array | None = None,
  ) -> tuple[jax.Array, jax.Array]:
    """Returns (context, weights) for one query per example ([B, Q] -> [B, D], [B, S]) or N of them
    ([B, N, Q] -> [B, N, D], [B, N, S]); weights are 0 at padded positions and sum to 1."""
    one = query.ndim == 2
    e = self.scores(query, keys_BxSxA, coverage_BxS).astype(jnp.float32)
    e = jnp.where((mask_BxS if one else mask_BxS[:, None, :]).astype(bool), e, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(e, axis=-1)
    context = jnp.einsum('bs,bsd->bd' if one else 'bns,bsd->bnd', weights.astype(values_BxSxD.dtype), values_BxSxD)
    return context, weights
