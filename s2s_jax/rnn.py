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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax import cudnn_rnn

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
    self.recurrent_proj = dense(use_bias=self.kind == 'gru', kernel_init=recurrent_kernel_init, name='recurrent')

  def _bias_init(self, key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros(shape, dtype)
    if self.kind == 'lstm':  # gates i, f, g, o; forget-gate bias 1 (Jozefowicz et al. 2015)
      bias = bias.at[self.hidden_dim : 2 * self.hidden_dim].set(1.0)
    return bias

  def initial_carry(self, batch_size: int) -> Carry:
    zeros = jnp.zeros((batch_size, self.hidden_dim), self.dtype)
    return (zeros, zeros) if self.kind == 'lstm' else (zeros,)

  def recurrent_kernel(self) -> jax.Array:
    """The recurrent weight [H, G] in the compute dtype (for the hand-written layer scans)."""
    return jnp.asarray(self._recurrent_params()['kernel'], self.dtype)

  def recurrent_bias(self) -> jax.Array:
    """The GRU's recurrent bias [G] in the compute dtype (for `gru_scan`)."""
    return jnp.asarray(self._recurrent_params()['bias'], self.dtype)

  def _recurrent_params(self):
    if self.is_initializing():  # creates the parameters (the hand-written scans read them directly)
      self.recurrent_proj(jnp.zeros((1, self.hidden_dim), self.dtype))
    return self.recurrent_proj.variables['params']

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


def _lstm_forward(kernel_HxG: jax.Array, xproj_TxBxG: jax.Array, c0_BxH: jax.Array, h0_BxH: jax.Array):
  """The LSTM recurrence of `RecurrentCell.step` over time-major pre-activations: ((cs, hs) [T, B, H], residuals)."""

  def body(carry, xproj_BxG):
    c, h = carry
    i, f, g, o = jnp.split(xproj_BxG + h @ kernel_HxG, 4, axis=-1)
    i, f, g, o = nn.sigmoid(i), nn.sigmoid(f), jnp.tanh(g), nn.sigmoid(o)
    c_new = f * c + i * g
    tanh_c = jnp.tanh(c_new)
    h_new = o * tanh_c
    return (c_new, h_new), (c_new, h_new, (i, f, g, o, c, tanh_c, h))

  _, (cs, hs, saved) = jax.lax.scan(body, (c0_BxH, h0_BxH), xproj_TxBxG)
  return (cs, hs), (kernel_HxG, saved)


def _lstm_backward(residuals, grads):
  """Backward of `_lstm_forward`: one reverse scan for the gate gradients, then the recurrent weight gradient as a
  single [H, T*B] x [T*B, 4H] matmul (autodiff of the scan would do T small matmuls and sum them)."""
  kernel_HxG, (i, f, g, o, c_prev, tanh_c, h_prev) = residuals
  dcs, dhs = grads

  def body(carry, xs):
    dh, dc = carry
    dc_out, dh_out, i, f, g, o, c_prev, tanh_c = xs
    dh = dh + dh_out
    dc = dc + dc_out + dh * o * (1.0 - tanh_c * tanh_c)
    dz = jnp.concatenate(
      [dc * g * i * (1.0 - i), dc * c_prev * f * (1.0 - f), dc * i * (1.0 - g * g), dh * tanh_c * o * (1.0 - o)],
      axis=-1,
    )
    # dz W^T contracting the gate axes of both: no transposed copy of W (measured faster than dz @ W.T here)
    return (jnp.einsum('bg,hg->bh', dz, kernel_HxG), dc * f), dz

  zeros = jnp.zeros_like(h_prev[0])
  (dh0, dc0), dz = jax.lax.scan(body, (zeros, zeros), (dcs, dhs, i, f, g, o, c_prev, tanh_c), reverse=True)
  dkernel = jnp.einsum('tbh,tbg->hg', h_prev, dz)
  return dkernel, dz, dc0, dh0


@jax.custom_vjp
def lstm_scan(
  kernel_HxG: jax.Array, xproj_TxBxG: jax.Array, c0_BxH: jax.Array, h0_BxH: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """All cell states and outputs (cs, hs) [T, B, H] of an LSTM layer, with a hand-written backward pass."""
  return _lstm_forward(kernel_HxG, xproj_TxBxG, c0_BxH, h0_BxH)[0]


lstm_scan.defvjp(_lstm_forward, _lstm_backward)


def _gru_forward(kernel_HxG: jax.Array, bias_G: jax.Array, xproj_TxBxG: jax.Array, h0_BxH: jax.Array):
  """The GRU recurrence of `RecurrentCell.step` over time-major pre-activations: (hs [T, B, H], residuals)."""

  def body(h, xproj_BxG):
    xr, xz, xn = jnp.split(xproj_BxG, 3, axis=-1)
    hr, hz, hn = jnp.split(h @ kernel_HxG + bias_G[None], 3, axis=-1)
    r, z = nn.sigmoid(xr + hr), nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = (1.0 - z) * n + z * h
    return h_new, (h_new, (r, z, n, hn, h))

  _, (hs, saved) = jax.lax.scan(body, h0_BxH, xproj_TxBxG)
  return hs, (kernel_HxG, saved)


def _gru_backward(residuals, dhs):
  """Backward of `_gru_forward`: one reverse scan for the pre-activation gradients, then the recurrent weight and
  bias gradients as one [H, T*B] x [T*B, 3H] matmul and one sum after it."""
  kernel_HxG, (r, z, n, hn, h_prev) = residuals

  def body(dh, xs):
    dh_out, r, z, n, hn, h_prev = xs
    dh = dh + dh_out
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dr = dn * hn * r * (1.0 - r)
    dz = dh * (h_prev - n) * z * (1.0 - z)
    dhproj = jnp.concatenate([dr, dz, dn * r], axis=-1)
    return dh * z + jnp.einsum('bg,hg->bh', dhproj, kernel_HxG), jnp.concatenate([dr, dz, dn], axis=-1)

  dh0, dx = jax.lax.scan(body, jnp.zeros_like(h_prev[0]), (dhs, r, z, n, hn, h_prev), reverse=True)
  hidden = r.shape[-1]
  dhproj = jnp.concatenate([dx[..., : 2 * hidden], dx[..., 2 * hidden :] * r], axis=-1)
  return jnp.einsum('tbh,tbg->hg', h_prev, dhproj), dhproj.sum(axis=(0, 1)), dx, dh0


@jax.custom_vjp
def gru_scan(kernel_HxG: jax.Array, bias_G: jax.Array, xproj_TxBxG: jax.Array, h0_BxH: jax.Array) -> jax.Array:
  """All outputs hs [T, B, H] of a GRU layer (cuDNN form: the reset gate multiplies h W + b), with a hand-written
  backward pass."""
  return _gru_forward(kernel_HxG, bias_G, xproj_TxBxG, h0_BxH)[0]


gru_scan.defvjp(_gru_forward, _gru_backward)


def _rnn_forward(kernel_HxH: jax.Array, xproj_TxBxH: jax.Array, h0_BxH: jax.Array):
  """The simple-RNN recurrence h_t = tanh(x_t + h_{t-1} W): (hs [T, B, H], residuals)."""

  def body(h, xproj_BxH):
    h_new = jnp.tanh(xproj_BxH + h @ kernel_HxH)
    return h_new, h_new

  _, hs = jax.lax.scan(body, h0_BxH, xproj_TxBxH)
  return hs, (kernel_HxH, hs, h0_BxH)


def _rnn_backward(residuals, dhs):
  """Backward of `_rnn_forward`; the recurrent weight gradient is one matmul after the reverse scan."""
  kernel_HxH, hs, h0_BxH = residuals

  def body(dh, xs):
    dh_out, h = xs
    dpre = (dh + dh_out) * (1.0 - h * h)
    return jnp.einsum('bg,hg->bh', dpre, kernel_HxH), dpre

  dh0, dx = jax.lax.scan(body, jnp.zeros_like(h0_BxH), (dhs, hs), reverse=True)
  h_prev = jnp.concatenate([h0_BxH[None], hs[:-1]], axis=0)
  return jnp.einsum('tbh,tbg->hg', h_prev, dx), dx, dh0


@jax.custom_vjp
def rnn_scan(kernel_HxH: jax.Array, xproj_TxBxH: jax.Array, h0_BxH: jax.Array) -> jax.Array:
  """All outputs hs [T, B, H] of a simple-RNN (tanh) layer, with a hand-written backward pass."""
  return _rnn_forward(kernel_HxH, xproj_TxBxH, h0_BxH)[0]


rnn_scan.defvjp(_rnn_forward, _rnn_backward)


def _scan_steps_any(cell: RecurrentCell, carry: Carry, xproj_TxBxG: jax.Array) -> Carry:
  if cell.kind == 'lstm':
    return lstm_scan(cell.recurrent_kernel(), xproj_TxBxG, *carry)
  if cell.kind == 'gru':
    return (gru_scan(cell.recurrent_kernel(), cell.recurrent_bias(), xproj_TxBxG, *carry),)
  return (rnn_scan(cell.recurrent_kernel(), xproj_TxBxG, *carry),)


_scan_steps_remat = nn.checkpoint(_scan_steps_any)


def scan_steps(cell: RecurrentCell, carry: Carry, xproj_TxBxG: jax.Array, remat: bool = False) -> Carry:
  """`cell.step` over every step of time-major input pre-activations, without masks: every step's carry, stacked
  ([T, B, H] each; the output is the last). Each cell kind runs its own scan with a hand-written backward pass
  (`lstm_scan`, `gru_scan`, `rnn_scan`). With
  `remat` only the inputs are kept for the backward pass, which runs the recurrence forward again."""
  return (_scan_steps_remat if remat else _scan_steps_any)(cell, carry, xproj_TxBxG)


def reverse_within_lengths(x: jax.Array, lengths_B: jax.Array, time_axis: int = 1) -> jax.Array:
  """Reverses each sequence's first lengths[b] steps along `time_axis` (1: [B, T, ...], 0: [T, B, ...]) and leaves
  the padding in place (an involution)."""
  t = jnp.arange(x.shape[time_axis])
  idx = jnp.where(t[None, :] < lengths_B[:, None], lengths_B[:, None] - 1 - t[None, :], t[None, :])  # [B, T]
  idx = idx.T if time_axis == 0 else idx
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=time_axis)


def run_layer(
  cell: RecurrentCell, x_TxBxD: jax.Array, mask_BxT: jax.Array, reverse: bool = False, remat: bool = False
) -> tuple[Carry, jax.Array]:
  """Runs one direction of one layer over a padded, time-major batch: (final carry, outputs [T, B, H]).

  The recurrence runs unmasked over every step: padding comes after each sequence's real steps (the backward
  direction reverses within lengths), so it cannot change them. The final carry is read at each sequence's last
  real step (the initial carry for an empty row) and the outputs at padded steps are zeroed.
  """
  lengths = mask_BxT.sum(axis=1).astype(jnp.int32)
  xproj = cell.input_proj(x_TxBxD)  # every time step in one matmul
  if reverse:
    xproj = reverse_within_lengths(xproj, lengths, time_axis=0)
  initial = cell.initial_carry(x_TxBxD.shape[1])
  carries = scan_steps(cell, initial, xproj, remat)
  last = jnp.maximum(lengths - 1, 0)
  batch = jnp.arange(lengths.shape[0])
  final = tuple(jnp.where((lengths > 0)[:, None], x[last, batch], x0) for x, x0 in zip(carries, initial))
  outputs = carries[-1] * mask_BxT.T[..., None].astype(carries[-1].dtype)
  if reverse:
    outputs = reverse_within_lengths(outputs, lengths, time_axis=0)
  return final, outputs


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


class Dropout(nn.Module):
  """flax's nn.Dropout, whose keep probability may be a runtime input (`keep`: an array, 1 - rate; the train step's
  hyperparameters, so runs with other rates share one program). `rate` is the configured rate: 0.0 means no
  dropout at all (no mask: a program of its own); with `keep` None it gives the keep probability, as in nn.Dropout.
  The masks are nn.Dropout's bit for bit: the same rng ('dropout', by module path), comparison and scaling."""

  rate: float
  keep: Any = None
  broadcast_dims: Sequence[int] = ()

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
    if self.rate == 0.0 or deterministic:
      return inputs
    keep = 1.0 - self.rate if self.keep is None else self.keep
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    mask = jnp.broadcast_to(jax.random.bernoulli(self.make_rng('dropout'), p=keep, shape=shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep_as(keep, inputs.dtype), jnp.zeros_like(inputs))


def keep_as(keep, dtype) -> jax.Array | float:
  """A keep probability to divide by in `dtype`: a Python float stays one (weakly typed, as nn.Dropout divides), an
  array is cast (a float32 array would promote bfloat16 activations)."""
  return keep if isinstance(keep, float) else jnp.asarray(keep, dtype)


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
  remat: bool = False  # recompute each recurrence in the backward pass instead of keeping its activations
  dropout_keep: Any = None  # 1 - dropout_rate as a runtime input (Dropout), or None
  lstm: Any = None  # a layer function (cudnn_rnn.encoder_lstm) running each LSTM layer instead of the scan, or None

  @nn.compact
  def __call__(
    self, x_BxTxD: jax.Array, mask_BxT: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, Sequence[Carry]]:
    cell = functools.partial(
      RecurrentCell, self.kind, self.hidden_dim, self.recurrent_init, self.init_scale, self.dtype
    )
    x_TxBxD = x_BxTxD.swapaxes(0, 1)  # the layers run time-major: a time step is one contiguous [B, D] block
    finals = []
    for layer in range(self.num_layers):
      if layer > 0 and self.pyramid:
        x_BxTxD, mask_BxT = halve_time(x_TxBxD.swapaxes(0, 1), mask_BxT)
        x_TxBxD = x_BxTxD.swapaxes(0, 1)
      if layer > 0:
        over_time = (0,) if self.variational_dropout else ()
        dropout = Dropout(self.dropout_rate, self.dropout_keep, broadcast_dims=over_time)
        x_TxBxD = dropout(x_TxBxD, deterministic=not train)
      if self.lstm is not None:  # both directions in one call (cudnn_rnn.run_layer)
        cells = [cell(name=f'layer{layer}_{d}') for d in ('fwd', 'bwd')[: 1 + self.bidirectional]]
        carry, x_TxBxD = cudnn_rnn.run_layer(self.lstm, cells, x_TxBxD, mask_BxT)
        finals.append(carry)
        continue
      carry, out = run_layer(cell(name=f'layer{layer}_fwd'), x_TxBxD, mask_BxT, remat=self.remat)
      if self.bidirectional:
        carry_bwd, out_bwd = run_layer(
          cell(name=f'layer{layer}_bwd'), x_TxBxD, mask_BxT, reverse=True, remat=self.remat
        )
        carry = tuple(jnp.concatenate(pair, axis=-1) for pair in zip(carry, carry_bwd))
        out = jnp.concatenate([out, out_bwd], axis=-1)
      finals.append(carry)
      x_TxBxD = out
    return x_TxBxD.swapaxes(0, 1), tuple(finals)
