"""Seq2Seq: an RNN encoder, a bridge and a decoder cell, used two ways (teacher forcing and step by step).

  memory, state = model.apply(v, inputs, inputs_mask, method=Seq2Seq.encode)
  logits, state = model.apply(v, ids, state, memory, method=Seq2Seq.decode_step)   # beam search
  logits = model.apply(v, inputs, inputs_mask, targets, train=True, rngs=...)       # teacher forcing

Both paths share the decoder's parameters and math: beam search calls `DecoderCell.step`; teacher forcing scans it
over the target with the time-independent matmuls (target embedding projection, vocabulary projection) hoisted out
of the scan, or, when no step's RNN input depends on attention (`DecoderCell.layerwise`: none_init, none_concat, luong
without input feeding or coverage), runs each decoder layer as one scan of its recurrence and attends for all
target steps at once (`DecoderCell.all_steps`); tests check that every path gives the same logits. Inputs carry
explicit masks (1 for real steps, contiguous from the start), so the same code serves token ids, audio frames and
image grids.
"""
import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax import attention as attention_lib
from s2s_jax import data
from s2s_jax import decoder as decoder_lib
from s2s_jax import rnn

BRIDGES = ('copy', 'dense', 'zeros')
DTYPES = ('float32', 'bfloat16', 'float16')
# What a source step is: a token id, a feature frame (log-mel audio), or an image column (a CNN makes the grid).
INPUT_KINDS = ('tokens', 'frames', 'image')
FRAME_STRIDES = (1, 2, 4, 8)


@flax.struct.dataclass
class Seq2SeqConfig:
  """Model hyperparameters: the fields of `config.model` (CONVENTIONS §3)."""
  src_vocab_size: int = 0  # set from the data (tokens only)
  tgt_vocab_size: int = 0  # set from the data
  input_kind: str = 'tokens'  # tokens | frames | image: set from the data
  input_features: int = 0  # frames: features per frame (mel bins); image: pixels per column (height); from the data
  frame_stride: int = 1  # frames: 1, 2, 4 or 8 = time subsampling by that many stride-2 convolutions (width 3)
  pyramid: bool = False  # Listen, Attend and Spell: each encoder layer above the first halves time (concat pairs)
  specaug_masks: int = 2  # SpecAugment (training only): frequency bands and time bands, each this many
  specaug_freq_width: int = 0  # widest frequency band (mel bins); 0: no frequency masking
  specaug_time_width: int = 0  # widest time band (frames, at most 20% of the utterance); 0: no time masking
  cnn_layers: int = 2  # image: 3x3 convolution + ReLU + 2x2 max-pool blocks
  cnn_features: int = 32  # image: channels of every block
  image_channels: int = 1  # image: colour channels (input_features = height x channels); set from the data
  cell: str = 'lstm'  # rnn | gru | lstm
  num_layers: int = 1  # encoder and decoder layers
  bidirectional: bool = False  # encoder only
  bridge: str = 'copy'  # copy | dense | zeros: how the encoder's final states initialise the decoder
  attention: str = 'luong'  # none_init | none_concat | bahdanau | luong
  attention_score: str = 'general'  # additive | dot | general | concat | location | scaled_dot
  input_feeding: bool = False  # luong flow: feed h~_{t-1} into step t
  context_to_output: bool = False  # none_concat: the output layer also sees the context
  embed_to_output: bool = False  # the output layer also sees the previous target embedding
  pointer_generator: bool = False  # See et al. 2017: mix the vocabulary softmax with copying source ids (shared vocab)
  coverage: bool = False  # See et al. 2017: the summed past attention joins the additive / concat score
  embed_dim: int = 64
  hidden_dim: int = 128  # decoder units (and encoder units per direction unless encoder_hidden_dim is set)
  encoder_hidden_dim: int = 0  # units per encoder direction; 0: hidden_dim, or hidden_dim // 2 when bidirectional
  attention_dim: int = 0  # additive / concat scorer size; 0: hidden_dim
  max_src_len: int = 0  # padded source length; the location score needs it (set from data.max_src_len)
  dropout_rate: float = 0.0  # on embeddings, between layers, before the output layer
  variational_dropout: bool = False  # one mask per sequence, shared over time
  tie_embeddings: bool = False  # target embedding = output matrix (through a projection to embed_dim)
  recurrent_init: str = 'orthogonal'  # orthogonal (recurrent) + lecun (input) | uniform (all weights U(-s, s))
  init_scale: float = 0.1  # s of the uniform initialisation
  dtype: str = 'float32'  # compute dtype; parameters stay float32
  remat: bool = False  # recompute the recurrences' forward in the backward pass: less memory for long sequences

  @property
  def num_directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def encoder_units(self) -> int:
    if self.encoder_hidden_dim:
      return self.encoder_hidden_dim
    return self.hidden_dim // self.num_directions

  def validate(self) -> None:
    """Raises ValueError naming the field and the allowed values for every invalid choice."""
    choices = {'cell': rnn.CELLS, 'bridge': BRIDGES, 'attention': attention_lib.FLOWS,
               'attention_score': attention_lib.SCORES, 'recurrent_init': rnn.RECURRENT_INITS, 'dtype': DTYPES,
               'input_kind': INPUT_KINDS, 'frame_stride': FRAME_STRIDES}
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f'model.{name}={getattr(self, name)!r} is not one of {allowed}.')
    attention_lib.check_combination(self.attention, self.attention_score, self.input_feeding)
    positive = ('src_vocab_size',) if self.input_kind == 'tokens' else ('input_features',)
    for name in positive + ('tgt_vocab_size', 'num_layers', 'embed_dim', 'hidden_dim', 'cnn_layers', 'cnn_features'):
      if getattr(self, name) <= 0:
        raise ValueError(f'model.{name} must be positive, got {getattr(self, name)}.')
    for name in ('specaug_masks', 'specaug_freq_width', 'specaug_time_width'):
      if getattr(self, name) < 0:
        raise ValueError(f'model.{name} must be >= 0, got {getattr(self, name)}.')
    if self.input_kind != 'frames' and (self.frame_stride > 1 or self.specaug_freq_width or self.specaug_time_width):
      raise ValueError('model.frame_stride and model.specaug_* apply to audio frames only; model.input_kind='
                       f'{self.input_kind!r} (set from the data).')
    if self.input_kind == 'image' and (self.image_channels <= 0 or self.input_features % self.image_channels):
      raise ValueError(f'model.input_features={self.input_features} (image height x channels) must be a multiple '
                       f'of model.image_channels={self.image_channels}.')
    if self.pointer_generator and self.input_kind != 'tokens':
      raise ValueError('model.pointer_generator copies source tokens; this dataset\'s source is '
                       f'{self.input_kind}.')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'model.dropout_rate must be in [0, 1), got {self.dropout_rate}.')
    if self.bridge == 'copy' and self.encoder_units * self.num_directions != self.hidden_dim:
      raise ValueError(f'model.bridge=copy needs encoder units x directions == hidden_dim '
                       f'({self.encoder_units} x {self.num_directions} != {self.hidden_dim}); use bridge=dense or '
                       f'change model.encoder_hidden_dim.')
    if self.attention == 'none_init' and self.bridge == 'zeros':
      raise ValueError('model.attention=none_init with model.bridge=zeros gives the decoder no information about '
                       'the source; use bridge=copy or dense.')
    if (self.pointer_generator or self.coverage) and self.attention in attention_lib.NO_ATTENTION:
      raise ValueError(f'model.pointer_generator and model.coverage need attention weights; model.attention='
                       f'{self.attention!r} has none (use bahdanau or luong).')
    if self.coverage and self.attention_score not in ('additive', 'concat'):
      raise ValueError(f'model.coverage feeds the coverage vector into the additive / concat score; '
                       f'model.attention_score={self.attention_score!r} has no place for it.')
    if self.pointer_generator and self.src_vocab_size != self.tgt_vocab_size:
      raise ValueError(f'model.pointer_generator needs one vocabulary for both sides (data.shared_vocab=True); got '
                       f'{self.src_vocab_size} source and {self.tgt_vocab_size} target ids.')
    if self.context_to_output and self.attention != 'none_concat':
      raise ValueError('model.context_to_output applies only to model.attention=none_concat.')
    if self.attention_score == 'location' and self.attention not in attention_lib.NO_ATTENTION \
        and self.max_src_len <= 0:
      raise ValueError('model.attention_score=location needs model.max_src_len > 0 (set from data.max_src_len).')

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'Seq2SeqConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(d) - known):
      raise ValueError(f'Unknown model field(s) {unknown}; valid fields: {sorted(known)}.')
    return cls(**d)


def shift_right(targets_BxT: jax.Array) -> jax.Array:
  """Decoder inputs: BOS, then the targets without their last position."""
  bos = jnp.full((targets_BxT.shape[0], 1), data.BOS_ID, targets_BxT.dtype)
  return jnp.concatenate([bos, targets_BxT[:, :-1]], axis=1)


def _decoder_scan_body(cell: decoder_lib.DecoderCell, state, xs, memory):
  return cell.step(state, xs, memory)


# model.remat -> the decoder step scanned over the target (with remat, each step is recomputed in the backward pass)
_SCAN_DECODER = {remat: nn.scan(nn.checkpoint(_decoder_scan_body) if remat else _decoder_scan_body,
                                variable_broadcast='params', split_rngs={'params': False}, in_axes=(1, nn.broadcast),
                                out_axes=1) for remat in (False, True)}


def spec_augment(rng: jax.Array, x_BxTxF: jax.Array, mask_BxT: jax.Array, num_masks: int, freq_width: int,
                 time_width: int) -> jax.Array:
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


class GridEncoder(nn.Module):
  """A small CNN over an image given as columns [B, W, H] (Show, Attend and Tell's annotation grid).

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


def memory_mask(cfg: Seq2SeqConfig, inputs_mask_BxS: jax.Array) -> jax.Array:
  """The encoder memory's mask for an input mask: what `Seq2Seq.encode` puts in memory['mask'] (the input mask,
  subsampled by the frame convolutions and the pyramid, or the image grid's cells)."""
  mask = inputs_mask_BxS
  if cfg.input_kind == 'image':
    height = cfg.input_features // cfg.image_channels
    for _ in range(cfg.cnn_layers):
      height = -(-height // 2)
    return grid_mask(mask, cfg.cnn_layers, height)
  if cfg.input_kind == 'frames':
    mask = mask[:, ::cfg.frame_stride]
  return rnn.pyramid_mask(mask, cfg.num_layers) if cfg.pyramid else mask


class Seq2Seq(nn.Module):
  """An RNN encoder-decoder; `cfg.attention` picks the decoder flow."""
  cfg: Seq2SeqConfig

  def setup(self):
    c = self.cfg
    c.validate()
    dtype = jnp.dtype(c.dtype)
    if c.input_kind == 'tokens':
      self.src_embed = nn.Embed(c.src_vocab_size, c.embed_dim, dtype=dtype,
                                embedding_init=nn.initializers.normal(stddev=1.0))
    elif c.input_kind == 'frames':
      self.subsample = [nn.Conv(c.embed_dim, (3,), strides=(2,), padding='SAME', dtype=dtype, name=f'subsample{i}')
                        for i in range(c.frame_stride.bit_length() - 1)]
      self.frame_proj = nn.Dense(c.embed_dim, dtype=dtype)
    else:
      self.grid = GridEncoder(c.cnn_layers, c.cnn_features, c.image_channels, dtype)
      self.frame_proj = nn.Dense(c.embed_dim, dtype=dtype)
    self.encoder = rnn.RNNStack(c.cell, c.num_layers, c.encoder_units, c.bidirectional, c.dropout_rate,
                                c.variational_dropout, c.recurrent_init, c.init_scale, dtype, pyramid=c.pyramid,
                                remat=c.remat)
    if c.bridge == 'dense':
      components = 2 if c.cell == 'lstm' else 1
      self.bridge_proj = [[nn.Dense(c.hidden_dim, dtype=dtype, name=f'bridge{layer}_{j}')
                           for j in range(components)] for layer in range(c.num_layers)]
    self.decoder = decoder_lib.DecoderCell(c)
    self.dropout = nn.Dropout(c.dropout_rate)

  def _bridge(self, finals: tuple[rnn.Carry, ...]) -> tuple[rnn.Carry, ...]:
    c = self.cfg
    if c.bridge == 'copy':
      return finals
    if c.bridge == 'zeros':
      return tuple(tuple(jnp.zeros(x.shape[:-1] + (c.hidden_dim,), x.dtype) for x in carry) for carry in finals)
    return tuple(tuple(jnp.tanh(proj(x)) for proj, x in zip(projs, carry))
                 for projs, carry in zip(self.bridge_proj, finals))

  def encode(self, inputs: jax.Array, inputs_mask: jax.Array, train: bool = False
             ) -> tuple[decoder_lib.Memory, decoder_lib.State]:
    """Encodes a padded batch: returns (memory for the decoder, initial decoder state); leaves lead with B."""
    x, mask = self._embed_source(inputs, inputs_mask, train)
    x = self.dropout(x, deterministic=not train)
    values, finals = self.encoder(x, mask, train=train)
    if self.cfg.pyramid:
      mask = rnn.pyramid_mask(mask, self.cfg.num_layers)
    memory = self.decoder.prepare_memory(values, mask, finals[-1][-1], inputs if self.cfg.pointer_generator else None)
    return memory, self.decoder.initial_state(self._bridge(finals), memory)

  def _embed_source(self, inputs: jax.Array, mask_BxS: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """The encoder's input sequence and its mask: embedded ids, projected (subsampled, augmented) frames, or the
    column-major flattened CNN grid of an image."""
    c = self.cfg
    if c.input_kind == 'tokens':
      return self.src_embed(inputs), mask_BxS
    x = inputs.astype(jnp.dtype(c.dtype))
    if c.input_kind == 'image':
      x, mask_BxS = self.grid(x, mask_BxS)
      return self.frame_proj(x), mask_BxS
    if train and (c.specaug_freq_width or c.specaug_time_width):
      x = spec_augment(self.make_rng('dropout'), x, mask_BxS, c.specaug_masks, c.specaug_freq_width,
                       c.specaug_time_width)
    for conv in self.subsample:
      x, mask_BxS = nn.relu(conv(x)), mask_BxS[:, ::2]
    return self.frame_proj(x) * mask_BxS[..., None].astype(x.dtype), mask_BxS

  def decode_step(self, ids_N: jax.Array, state: decoder_lib.State, memory: decoder_lib.Memory
                  ) -> tuple[jax.Array, decoder_lib.State]:
    """One step for beam search: (previous token ids [N], state) -> (logits float32 [N, V], new state)."""
    emb = self.decoder.embed(ids_N)
    xs = (self.decoder.project_embedding(emb), emb if self.cfg.embed_to_output else None, None)
    state, (out, attn) = self.decoder.step(state, xs, memory)
    return self.decoder.readout(out, emb=emb, attn=attn, memory=memory), state

  def __call__(self, inputs: jax.Array, inputs_mask: jax.Array, targets: jax.Array, *, train: bool = False,
               return_attention: bool = False):
    """Teacher forcing: logits float32 [B, T, V] (and attention weights [B, T, S] or None).

    With cfg.pointer_generator the "logits" are the log-probabilities of the mixed distribution (already normalised,
    so every consumer that applies log_softmax gets them back unchanged).
    """
    memory, state = self.encode(inputs, inputs_mask, train=train)
    batch_size, length = targets.shape
    masks = self.decoder.dropout_masks(batch_size, length, train)
    if self.decoder.layerwise:  # time-major from the embedding on, as the RNN layers run
      emb_TxBxE = self.dropout(self.decoder.embed(shift_right(targets).T), deterministic=not train)
      outs, attn = self.decoder.all_steps(state, emb_TxBxE, masks, memory)
      emb = emb_TxBxE.swapaxes(0, 1)
    else:
      emb = self.dropout(self.decoder.embed(shift_right(targets)), deterministic=not train)
      xs = (self.decoder.project_embedding(emb), emb if self.cfg.embed_to_output else None, masks)
      _, (outs, attn) = _SCAN_DECODER[self.cfg.remat](self.decoder, state, xs, memory)
    logits = self.decoder.readout(outs, train=train, emb=emb, attn=attn, memory=memory)
    return (logits, attn) if return_attention else logits
