"""Recurrent cells and scanned, masked, (bi)directional multi-layer stacks.

A cell is split in two: `input_proj` maps inputs of any leading shape to the pre-activations of all gates, so the
input-to-hidden matmul for every time step is one matmul outside the recurrence; `step` adds the recurrent term and
applies the gate arithmetic for one time step. The same `step` is used by the encoder's scanned layers and by the
decoder (one step at a time), so both paths share parameters and math.

Carries are tuples: `(h,)` for `rnn` and `gru`, `(c, h)` for `lstm`; the output is always `carry[-1]`. Padding never
changes results: a padded step keeps the previous carry and outputs zeros, and the backward direction reverses each
sequence within its own length.
"""
from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

CELLS = ('rnn', 'gru', 'lstm')
RECURRENT_INITS = ('orthogonal', 'uniform')
_NUM_GATES = {'rnn': 1, 'gru': 3, 'lstm': 4}

Carry = tuple[jax.Array, ...]


def num_gates(kind: str) -> int:
  return _NUM_GATES[kind]


def uniform_init(scale: float) -> nn.initializers.Initializer:
  """U(-scale, scale), the classic seq2seq initialisation (Sutskever 2014: 0.08; tensorflow/nmt: 0.1)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def blockwise_orthogonal(num_blocks: int) -> nn.initializers.Initializer:
  """An orthogonal [H, H] matrix for each gate, concatenated to [H, num_blocks * H]."""
  def init(key, shape, dtype=jnp.float32):
    rows, cols = shape
    keys = jax.random.split(key, num_blocks)
    blocks = [nn.initializers.orthogonal()(k, (rows, cols // num_blocks), dtype) for k in keys]
    return jnp.concatenate(blocks, axis=-1)
  return init


class RecurrentCell(nn.Module):
  """A simple-RNN, GRU (biases as in cuDNN, reset gate applied after the matmul) or LSTM cell."""
  kind: str
  hidden_dim: int
  recurrent_init: str = 'orthogonal'
  init_scale: float = 0.1  # range of U(-s, s) when recurrent_init == 'uniform'
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.kind not in CELLS:
      raise ValueError(f'Unknown cell {self.kind!r}; choose one of {CELLS}.')
    gates = _NUM_GATES[self.kind]
    if self.recurrent_init == 'uniform':
      kernel_init = recurrent_kernel_init = uniform_init(self.init_scale)
    else:
      kernel_init = nn.initializers.lecun_normal()
      recurrent_kernel_init = blockwise_orthogonal(gates)
    dense = functools.partial(nn.Dense, gates * self.hidden_dim, dtype=self.dtype)
    self.input_proj = dense(kernel_init=kernel_init, bias_init=self._bias_init, name='input')
    # The GRU keeps a separate recurrent bias because its reset gate multiplies (h W + b).
    self.recurrent_proj = dense(use_bias=self.kind == 'gru', kernel_init=recurrent_kernel_init,
                                name='recurrent')

  def _bias_init(self, key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros(shape, dtype)
    if self.kind == 'lstm':  # gates i, f, g, o; forget-gate bias 1 (Jozefowicz et al. 2015)
      bias = bias.at[self.hidden_dim:2 * self.hidden_dim].set(1.0)
    return bias

  def initial_carry(self, batch_size: int) -> Carry:
    zeros = jnp.zeros((batch_size, self.hidden_dim), self.dtype)
    return (zeros, zeros) if self.kind == 'lstm' else (zeros,)

  def step(self, carry: Carry, xproj_BxG: jax.Array) -> Carry:
    """One time step from precomputed input pre-activations `xproj = input_proj(x)`."""
    h = carry[-1]
    hproj = self.recurrent_proj(h)
    if self.kind == 'rnn':
      return (jnp.tanh(xproj_BxG + hproj),)
    if self.kind == 'gru':
      xr, xz, xn = jnp.split(xproj_BxG, 3, axis=-1)
      hr, hz, hn = jnp.split(hproj, 3, axis=-1)
      r = nn.sigmoid(xr + hr)
      z = nn.sigmoid(xz + hz)
      n = jnp.tanh(xn + r * hn)
      return ((1.0 - z) * n + z * h,)
    i, f, g, o = jnp.split(xproj_BxG + hproj, 4, axis=-1)
    c = nn.sigmoid(f) * carry[0] + nn.sigmoid(i) * jnp.tanh(g)
    return (c, nn.sigmoid(o) * jnp.tanh(c))


def masked_step(cell: RecurrentCell, carry: Carry, xproj_BxG: jax.Array, mask_B: jax.Array | None) -> Carry:
  """`cell.step` that keeps the old carry where `mask_B` is 0."""
  new = cell.step(carry, xproj_BxG)
  if mask_B is None:
    return new
  keep = mask_B[:, None].astype(bool)
  return tuple(jnp.where(keep, n, o) for n, o in zip(new, carry))


def _scan_body(cell: RecurrentCell, carry: Carry, xs: tuple[jax.Array, jax.Array]):
  xproj_BxG, mask_B = xs
  carry = masked_step(cell, carry, xproj_BxG, mask_B)
  return carry, carry[-1] * mask_B[:, None].astype(carry[-1].dtype)


_scan_time = nn.scan(_scan_body, variable_broadcast='params', split_rngs={'params': False},
                     in_axes=1, out_axes=1)


def reverse_within_lengths(x_BxT: jax.Array, lengths_B: jax.Array) -> jax.Array:
  """Reverses x[b, :lengths[b]] along axis 1 and leaves the padding in place (an involution)."""
  t = jnp.arange(x_BxT.shape[1])
  idx_BxT = jnp.where(t[None, :] < lengths_B[:, None], lengths_B[:, None] - 1 - t[None, :], t[None, :])
  idx = idx_BxT.reshape(idx_BxT.shape + (1,) * (x_BxT.ndim - 2))
  return jnp.take_along_axis(x_BxT, idx, axis=1)


def run_layer(cell: RecurrentCell, x_BxTxD: jax.Array, mask_BxT: jax.Array,
              reverse: bool = False) -> tuple[Carry, jax.Array]:
  """Runs one direction of one layer over a padded batch; returns (final carry, outputs [B, T, H])."""
  lengths = mask_BxT.sum(axis=1).astype(jnp.int32)
  xproj = cell.input_proj(x_BxTxD)  # every time step in one matmul
  if reverse:
    xproj = reverse_within_lengths(xproj, lengths)
  # mask_BxT is contiguous (ones then zeros), so the reversed mask equals the mask.
  carry, outputs = _scan_time(cell, cell.initial_carry(x_BxTxD.shape[0]), (xproj, mask_BxT))
  if reverse:
    outputs = reverse_within_lengths(outputs, lengths)
  return carry, outputs


def halve_time(x_BxTxD: jax.Array, mask_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pairs of consecutive steps concatenated: [B, ceil(T/2), 2D] and the mask of the pairs' first steps."""
  if x_BxTxD.shape[1] % 2:
    x_BxTxD = jnp.pad(x_BxTxD, ((0, 0), (0, 1), (0, 0)))
  batch, steps, dim = x_BxTxD.shape
  return x_BxTxD.reshape(batch, steps // 2, 2 * dim), mask_BxT[:, ::2]


def pyramid_mask(mask_BxT: jax.Array, num_layers: int) -> jax.Array:
  """The mask of a pyramidal RNNStack's outputs: halved once per layer above the first."""
  for _ in range(num_layers - 1):
    mask_BxT = mask_BxT[:, ::2]
  return mask_BxT


class RNNStack(nn.Module):
  """Multi-layer, optionally bidirectional and pyramidal, scanned RNN over a padded batch with explicit masks.

  Returns the top layer's outputs [B, T', H * directions] (zero at padded steps; T' = T, or T halved per layer
  above the first when `pyramid`, see `pyramid_mask`) and, per layer, the final carry with the directions
  concatenated on the feature axis.
  """
  kind: str
  num_layers: int
  hidden_dim: int
  bidirectional: bool = False
  dropout_rate: float = 0.0
  variational_dropout: bool = False  # one dropout mask per sequence, shared over time (Gal & Ghahramani 2016)
  recurrent_init: str = 'orthogonal'
  init_scale: float = 0.1
  dtype: jnp.dtype = jnp.float32
  pyramid: bool = False  # Listen, Attend and Spell: layers above the first read pairs of steps (time halves)

  @nn.compact
  def __call__(self, x_BxTxD: jax.Array, mask_BxT: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, Sequence[Carry]]:
    cell = functools.partial(RecurrentCell, self.kind, self.hidden_dim, self.recurrent_init, self.init_scale,
                             self.dtype)
    finals = []
    for layer in range(self.num_layers):
      if layer > 0 and self.pyramid:
        x_BxTxD, mask_BxT = halve_time(x_BxTxD, mask_BxT)
      if layer > 0:
        x_BxTxD = nn.Dropout(self.dropout_rate, broadcast_dims=(1,) if self.variational_dropout else ())(
            x_BxTxD, deterministic=not train)
      carry, out = run_layer(cell(name=f'layer{layer}_fwd'), x_BxTxD, mask_BxT)
      if self.bidirectional:
        carry_bwd, out_bwd = run_layer(cell(name=f'layer{layer}_bwd'), x_BxTxD, mask_BxT, reverse=True)
        carry = tuple(jnp.concatenate(pair, axis=-1) for pair in zip(carry, carry_bwd))
        out = jnp.concatenate([out, out_bwd], axis=-1)
      finals.append(carry)
      x_BxTxD = out
    return x_BxTxD, tuple(finals)
