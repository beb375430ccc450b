"""Source inputs: how a source becomes the sequence the encoder RNN reads, and what that implies for its memory.

One module per input kind (`model.input_kind`, set from the data's source frontend):

  TokenInput   token ids -> embeddings
  FrameInput   log-mel frames -> SpecAugment (training only), stride-2 convolutions, a projection
  ImageInput   image columns -> a small CNN's grid of cells (Show, Attend and Tell), a projection

Each is called as `x, mask = source(inputs, inputs_mask, train)` inside `Seq2Seq.encode`, and answers, without
parameters (an unbound module will do), the questions the rest of the code asks about the encoder's memory:
`memory_mask(inputs_mask)` (after the RNN's pyramid too: what `Seq2Seq.encode` puts in memory['mask']),
`memory_labels(input_labels)` (one label per memory step, for attention plots), `grid_shape()` (images) and
`dummy_inputs(batch, length)` (for initialisation). The decoder never learns the kind: it sees memory and mask.

`Seq2Seq` shares its scope with its source input (`nn.share_scope`), so the parameters keep the names they had
when these layers lived in the model itself (src_embed, subsample<i>, frame_proj, grid): old checkpoints load.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax import rnn
from s2s_jax import seq2seq_config


class SourceInput(nn.Module):
  """The common part: the memory geometry of the RNN stack above the input (its pyramid halves time)."""

  cfg: seq2seq_config.Seq2SeqConfig

  def step_mask(self, inputs_mask_BxS: jax.Array) -> jax.Array:
    """The mask of the sequence the encoder RNN reads."""
    return inputs_mask_BxS

  def memory_mask(self, inputs_mask_BxS: jax.Array) -> jax.Array:
    """The mask of the encoder's memory for an input mask."""
    mask = self.step_mask(inputs_mask_BxS)
    return rnn.pyramid_mask(mask, self.cfg.num_layers) if self.cfg.pyramid else mask

  def time_stride(self) -> int:
    """Input steps per memory step along time."""
    return 2 ** (self.cfg.num_layers - 1) if self.cfg.pyramid else 1

  def memory_labels(self, input_labels: Sequence[str]) -> list[str]:
    """One label per memory step of an example whose input steps are named `input_labels`: the label of the first
    input step each memory step covers."""
    return list(input_labels[:: self.time_stride()])

  def dummy_inputs(self, batch: int, length: int) -> jax.Array:
    """Inputs of the right kind and shape (for initialisation)."""
    return jnp.ones((batch, length), jnp.int32)


class TokenInput(SourceInput):
  """Token ids [B, S] -> embeddings [B, S, E] (initialised N(0, 1))."""

  @nn.compact
  def __call__(self, inputs_BxS: jax.Array, mask_BxS: jax.Array, train: bool = False):
    c = self.cfg
    embed = nn.Embed(
      c.src_vocab_size,
      c.embed_dim,
      dtype=jnp.dtype(c.dtype),
      embedding_init=nn.initializers.normal(stddev=1.0),
      name='src_embed',
    )
    return embed(inputs_BxS), mask_BxS


def spec_augment(
  rng: jax.Array, x_BxTxF: jax.Array, mask_BxT: jax.Array, num_masks: int, freq_width: int, time_width: int
) -> jax.Array:
  """SpecAugment's masking (Park et al. 2019) without time warping: per example, `num_masks` frequency bands of
  0..freq_width bins and `num_masks` time bands of 0..time_width frames (each at most 20% of the example's real
  frames) are set to 0, the mean of the per-utterance-normalised features."""
  batch, steps, features = x_BxTxF.shape
  k_fw, k_f0, k_tw, k_t0 = jax.random.split(rng, 4)

  def bands(k_width, k_start, size, max_width, extent_B):
    width = jax.random.randint(k_width, (batch, num_masks), 0, max_width + 1)
    width = jnp.minimum(width, extent_B[:, None] if extent_B is not None else width)
    room = (extent_B[:, None] if extent_B is not None else size) - width
    start = (jax.random.uniform(k_start, (batch, num_masks)) * jnp.maximum(room, 0)).astype(jnp.int32)
    pos = jnp.arange(size)[None, None, :]
    return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(axis=1)  # [B, size]

  lengths = mask_BxT.sum(axis=1).astype(jnp.int32)
  freq = bands(k_fw, k_f0, features, freq_width, None)
  time = bands(k_tw, k_t0, steps, time_width, lengths // 5) if time_width else jnp.zeros((batch, steps), bool)
  return jnp.where(freq[:, None, :] | time[:, :, None], jnp.zeros((), x_BxTxF.dtype), x_BxTxF)


class FrameInput(SourceInput):
  """Feature frames [B, S, F] -> (SpecAugment in training) -> log2(frame_stride) stride-2 convolutions (width 3,
  ReLU) -> a projection to embed_dim, zero at padded steps: [B, S / frame_stride, E]."""

  @nn.compact
  def __call__(self, inputs_BxSxF: jax.Array, mask_BxS: jax.Array, train: bool = False):
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    x = inputs_BxSxF.astype(dtype)
    if train and (c.specaug_freq_width or c.specaug_time_width):
      x = spec_augment(
        self.make_rng('dropout'), x, mask_BxS, c.specaug_masks, c.specaug_freq_width, c.specaug_time_width
      )
    for i in range(c.frame_stride.bit_length() - 1):
      conv = nn.Conv(c.embed_dim, (3,), strides=(2,), padding='SAME', dtype=dtype, name=f'subsample{i}')
      x, mask_BxS = nn.relu(conv(x)), mask_BxS[:, ::2]
    return nn.Dense(c.embed_dim, dtype=dtype, name='frame_proj')(x) * mask_BxS[..., None].astype(x.dtype), mask_BxS

  def step_mask(self, inputs_mask_BxS: jax.Array) -> jax.Array:
    return inputs_mask_BxS[:, :: self.cfg.frame_stride]

  def time_stride(self) -> int:
    return self.cfg.frame_stride * super().time_stride()

  def dummy_inputs(self, batch: int, length: int) -> jax.Array:
    return jnp.ones((batch, length, self.cfg.input_features), jnp.float32)


class GridEncoder(nn.Module):
  """A small CNN over an image given as columns [B, W, H * C] (Show, Attend and Tell's annotation grid).

  `num_layers` blocks of 3x3 convolution + ReLU + 2x2 max-pooling give a [W', H'] grid of `features`-dim vectors,
  flattened column by column (left to right, top to bottom within a column) into a sequence of W' x H' cells; the
  cells of padded columns are masked.
  """

  num_layers: int
  features: int
  channels: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxWxF: jax.Array, mask_BxW: jax.Array) -> tuple[jax.Array, jax.Array]:
    batch, width, features = x_BxWxF.shape
    x = x_BxWxF.reshape(batch, width, features // self.channels, self.channels)
    for i in range(self.num_layers):
      x = nn.relu(nn.Conv(self.features, (3, 3), padding='SAME', dtype=self.dtype, name=f'conv{i}')(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    _, grid_w, grid_h, _ = x.shape
    return x.reshape(batch, grid_w * grid_h, self.features), grid_mask(mask_BxW, self.num_layers, grid_h)


def grid_mask(mask_BxW: jax.Array, num_layers: int, grid_height: int) -> jax.Array:
  """The mask of GridEncoder's cells: a cell is real when its column block starts in a real column."""
  for _ in range(num_layers):
    mask_BxW = mask_BxW[:, ::2]
  return jnp.repeat(mask_BxW, grid_height, axis=1)


def _halved(size: int, times: int) -> int:
  for _ in range(times):
    size = -(-size // 2)
  return size


class ImageInput(SourceInput):
  """Image columns [B, W, H * C] -> GridEncoder's cells -> a projection to embed_dim: [B, W' x H', E]."""

  @nn.compact
  def __call__(self, inputs_BxWxF: jax.Array, mask_BxW: jax.Array, train: bool = False):
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    x, mask = GridEncoder(c.cnn_layers, c.cnn_features, c.image_channels, dtype, name='grid')(
      inputs_BxWxF.astype(dtype), mask_BxW
    )
    return nn.Dense(c.embed_dim, dtype=dtype, name='frame_proj')(x), mask

  def grid_shape(self, width: int) -> tuple[int, int]:
    """(columns, rows) of the grid of an image `width` columns wide."""
    c = self.cfg
    return _halved(width, c.cnn_layers), _halved(c.input_features // c.image_channels, c.cnn_layers)

  def step_mask(self, inputs_mask_BxW: jax.Array) -> jax.Array:
    return grid_mask(inputs_mask_BxW, self.cfg.cnn_layers, self.grid_shape(1)[1])

  def memory_labels(self, input_labels: Sequence[str]) -> list[str]:
    """Grid cells column by column, 'x<column>y<row>' (grid coordinates), as the RNN above reads them."""
    width, height = self.grid_shape(len(input_labels))
    return [f'x{i}y{j}' for i in range(width) for j in range(height)][:: super().time_stride()]

  def dummy_inputs(self, batch: int, length: int) -> jax.Array:
    return jnp.ones((batch, length, self.cfg.input_features), jnp.float32)


# model.input_kind (seq2seq_config.INPUT_KINDS) -> its source input
_KINDS = {'tokens': TokenInput, 'frames': FrameInput, 'image': ImageInput}


def for_config(cfg: seq2seq_config.Seq2SeqConfig, **kwargs) -> SourceInput:
  """The source input of a model config; unbound, so its geometry methods work as is."""
  return _KINDS[cfg.input_kind](cfg, **kwargs)
