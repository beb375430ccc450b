"""Seq2Seq: an RNN encoder, a bridge and a decoder cell, used two ways (teacher forcing and step by step).

  memory, state = model.apply(v, inputs, inputs_mask, method=Seq2Seq.encode)
  logits, state = model.apply(v, ids, state, memory, method=Seq2Seq.decode_step)   # beam search
  logits = model.apply(v, inputs, inputs_mask, targets, train=True, rngs=...)       # teacher forcing

Both paths share the decoder's parameters and math: beam search calls `DecoderCell.step`; teacher forcing scans it
over the target with the time-independent matmuls (target embedding projection, vocabulary projection) hoisted out
of the scan, or, when no step's RNN input depends on attention (`DecoderCell.layerwise`: none_init, none_concat, luong
without input feeding or coverage), runs each decoder layer as one scan of its recurrence and attends for all
target steps at once (`DecoderCell.all_steps`); tests check that every path gives the same logits. Inputs carry
explicit masks (1 for real steps, contiguous from the start); how a source becomes the sequence the encoder reads
(token ids, audio frames, image grids) and what that does to the memory's mask is `encoders.py`'s business.
"""

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax import attention as attention_lib
from s2s_jax import cudnn_rnn
from s2s_jax import data
from s2s_jax import decoder as decoder_lib
from s2s_jax import encoders
from s2s_jax import rnn

BRIDGES = ('copy', 'dense', 'zeros')
DTYPES = ('float32', 'bfloat16', 'float16')


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
  # scan | cudnn | auto: the encoder's LSTM layers through cuDNN (CUDA GPUs, lstm, float32; the decoder stays
  # scanned); auto: cuDNN where the backend and model allow it, else the scan (cudnn_rnn.py, docs/gpu.md)
  rnn_impl: str = 'auto'

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
    choices = {
      'cell': rnn.CELLS,
      'bridge': BRIDGES,
      'attention': attention_lib.FLOWS,
      'attention_score': attention_lib.SCORES,
      'recurrent_init': rnn.RECURRENT_INITS,
      'dtype': DTYPES,
      'input_kind': encoders.INPUT_KINDS,
      'frame_stride': encoders.FRAME_STRIDES,
      'rnn_impl': cudnn_rnn.IMPLS,
    }
    for name, allowed in choices.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f'model.{name}={getattr(self, name)!r} is not one of {allowed}.')
    attention_lib.check_combination(self.attention, self.attention_score, self.input_feeding)
    cudnn_rnn.check(self.rnn_impl, self.cell, self.dtype)
    positive = ('src_vocab_size',) if self.input_kind == 'tokens' else ('input_features',)
    for name in positive + ('tgt_vocab_size', 'num_layers', 'embed_dim', 'hidden_dim', 'cnn_layers', 'cnn_features'):
      if getattr(self, name) <= 0:
        raise ValueError(f'model.{name} must be positive, got {getattr(self, name)}.')
    for name in ('specaug_masks', 'specaug_freq_width', 'specaug_time_width'):
      if getattr(self, name) < 0:
        raise ValueError(f'model.{name} must be >= 0, got {getattr(self, name)}.')
    if self.input_kind != 'frames' and (self.frame_stride > 1 or self.specaug_freq_width or self.specaug_time_width):
      raise ValueError(
        'model.frame_stride and model.specaug_* apply to audio frames only; model.input_kind='
        f'{self.input_kind!r} (set from the data).'
      )
    if self.input_kind == 'image' and (self.image_channels <= 0 or self.input_features % self.image_channels):
      raise ValueError(
        f'model.input_features={self.input_features} (image height x channels) must be a multiple '
        f'of model.image_channels={self.image_channels}.'
      )
    if self.pointer_generator and self.input_kind != 'tokens':
      raise ValueError(f"model.pointer_generator copies source tokens; this dataset's source is {self.input_kind}.")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'model.dropout_rate must be in [0, 1), got {self.dropout_rate}.')
    if self.bridge == 'copy' and self.encoder_units * self.num_directions != self.hidden_dim:
      raise ValueError(
        f'model.bridge=copy needs encoder units x directions == hidden_dim '
        f'({self.encoder_units} x {self.num_directions} != {self.hidden_dim}); use bridge=dense or '
        f'change model.encoder_hidden_dim.'
      )
    if self.attention == 'none_init' and self.bridge == 'zeros':
      raise ValueError(
        'model.attention=none_init with model.bridge=zeros gives the decoder no information about '
        'the source; use bridge=copy or dense.'
      )
    if (self.pointer_generator or self.coverage) and self.attention in attention_lib.NO_ATTENTION:
      raise ValueError(
        f'model.pointer_generator and model.coverage need attention weights; model.attention='
        f'{self.attention!r} has none (use bahdanau or luong).'
      )
    if self.coverage and self.attention_score not in ('additive', 'concat'):
      raise ValueError(
        f'model.coverage feeds the coverage vector into the additive / concat score; '
        f'model.attention_score={self.attention_score!r} has no place for it.'
      )
    if self.pointer_generator and self.src_vocab_size != self.tgt_vocab_size:
      raise ValueError(
        f'model.pointer_generator needs one vocabulary for both sides (data.shared_vocab=True); got '
        f'{self.src_vocab_size} source and {self.tgt_vocab_size} target ids.'
      )
    if self.context_to_output and self.attention != 'none_concat':
      raise ValueError('model.context_to_output applies only to model.attention=none_concat.')
    if (
      self.attention_score == 'location' and self.attention not in attention_lib.NO_ATTENTION and self.max_src_len <= 0
    ):
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
_SCAN_DECODER = {
  remat: nn.scan(
    nn.checkpoint(_decoder_scan_body) if remat else _decoder_scan_body,
    variable_broadcast='params',
    split_rngs={'params': False},
    in_axes=(1, nn.broadcast),
    out_axes=1,
  )
  for remat in (False, True)
}


def _sampled_scan_body(cell: decoder_lib.DecoderCell, carry, xs, memory, ratio, *, sample: bool, train: bool):
  """One decoder step of scheduled sampling: the input is the reference token where this step's coin is below
  `ratio`, else the token the model predicted at the step before (argmax, or a sample), PAD never; the
  vocabulary projection runs inside the step, since the next input depends on it."""
  state, predicted = carry
  reference, coin, key, masks = xs
  ids = jnp.where(coin < ratio, reference, predicted)
  emb = cell.dropout(cell.embed(ids), deterministic=not train)
  state, (out, attn) = cell.step(state, (cell.project_embedding(emb), emb, masks), memory)
  logits = cell.readout(out, train=train, emb=emb, attn=attn, memory=memory)
  scores = jax.lax.stop_gradient(logits).at[:, data.PAD_ID].set(-jnp.inf)
  predicted = jax.random.categorical(key[0], scores) if sample else jnp.argmax(scores, axis=-1)
  return (state, predicted.astype(ids.dtype)), (logits, attn)


# (sample, train) -> the scheduled-sampling decoder scanned over the target
_SCAN_SAMPLED = {
  (sample, train): nn.scan(
    functools.partial(_sampled_scan_body, sample=sample, train=train),
    variable_broadcast='params',
    split_rngs={'params': False, 'dropout': True},
    in_axes=(1, nn.broadcast, nn.broadcast),
    out_axes=1,
  )
  for sample in (False, True)
  for train in (False, True)
}


class Seq2Seq(nn.Module):
  """An RNN encoder-decoder; `cfg.attention` picks the decoder flow."""

  cfg: Seq2SeqConfig  # validated where it is built (config_lib.model_config), not at every trace of setup
  # 1 - cfg.dropout_rate as a runtime input (an array inside the train step: runs with other non-zero rates share one
  # program), or None (cfg.dropout_rate as a constant). cfg.dropout_rate = 0 is no dropout either way.
  dropout_keep: Any = None

  def setup(self):
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    self.source = encoders.for_config(c)
    nn.share_scope(self, self.source)  # its parameters sit at the model's top level (names as in old checkpoints)
    self.encoder = rnn.RNNStack(
      c.cell,
      c.num_layers,
      c.encoder_units,
      c.bidirectional,
      c.dropout_rate,
      c.variational_dropout,
      c.recurrent_init,
      c.init_scale,
      dtype,
      pyramid=c.pyramid,
      remat=c.remat,
      dropout_keep=self.dropout_keep,
      lstm=cudnn_rnn.encoder_lstm(c),
    )
    if c.bridge == 'dense':
      components = 2 if c.cell == 'lstm' else 1
      self.bridge_proj = [
        [nn.Dense(c.hidden_dim, dtype=dtype, name=f'bridge{layer}_{j}') for j in range(components)]
        for layer in range(c.num_layers)
      ]
    self.decoder = decoder_lib.DecoderCell(c, self.dropout_keep)
    self.dropout = rnn.Dropout(c.dropout_rate, self.dropout_keep)

  def _bridge(self, finals: tuple[rnn.Carry, ...]) -> tuple[rnn.Carry, ...]:
    c = self.cfg
    if c.bridge == 'copy':
      return finals
    if c.bridge == 'zeros':
      return tuple(tuple(jnp.zeros(x.shape[:-1] + (c.hidden_dim,), x.dtype) for x in carry) for carry in finals)
    return tuple(
      tuple(jnp.tanh(proj(x)) for proj, x in zip(projs, carry)) for projs, carry in zip(self.bridge_proj, finals)
    )

  def encode(
    self, inputs: jax.Array, inputs_mask: jax.Array, train: bool = False
  ) -> tuple[decoder_lib.Memory, decoder_lib.State]:
    """Encodes a padded batch: returns (memory for the decoder, initial decoder state); leaves lead with B."""
    x, mask = self.source(inputs, inputs_mask, train)
    x = self.dropout(x, deterministic=not train)
    values, finals = self.encoder(x, mask, train=train)
    if self.cfg.pyramid:
      mask = rnn.pyramid_mask(mask, self.cfg.num_layers)
    memory = self.decoder.prepare_memory(values, mask, finals[-1][-1], inputs if self.cfg.pointer_generator else None)
    return memory, self.decoder.initial_state(self._bridge(finals), memory)

  def decode_step(
    self, ids_N: jax.Array, state: decoder_lib.State, memory: decoder_lib.Memory
  ) -> tuple[jax.Array, decoder_lib.State]:
    """One step for beam search: (previous token ids [N], state) -> (logits float32 [N, V], new state)."""
    emb = self.decoder.embed(ids_N)
    xs = (self.decoder.project_embedding(emb), emb if self.cfg.embed_to_output else None, None)
    state, (out, attn) = self.decoder.step(state, xs, memory)
    return self.decoder.readout(out, emb=emb, attn=attn, memory=memory), state

  def __call__(
    self,
    inputs: jax.Array,
    inputs_mask: jax.Array,
    targets: jax.Array,
    *,
    train: bool = False,
    return_attention: bool = False,
  ):
    """Teacher forcing: logits float32 [B, T, V] (and attention weights [B, T, S] or None); see teacher_forcing."""
    out = self.teacher_forcing(inputs, inputs_mask, targets, train=train)
    return (out.logits, out.attention) if return_attention else out.logits

  def teacher_forcing(
    self,
    inputs: jax.Array,
    inputs_mask: jax.Array,
    targets: jax.Array,
    *,
    train: bool = False,
    ratio: jax.Array | None = None,
    sample: bool = False,
  ) -> 'TeacherForced':
    """The decoder fed the reference: logits, attention weights and the memory's mask.

    With a teacher-forcing `ratio` (scheduled sampling, Bengio et al. 2015), each step is fed the reference token
    with that probability (per token; coins drawn from the 'dropout' rng) and otherwise the model's own prediction
    of the step before (its argmax, or with `sample` a draw from it): a scan of whole decoder steps, gradients not
    flowing through the choice. ratio=None is plain teacher forcing with its fast paths.

    With cfg.pointer_generator the "logits" are the log-probabilities of the mixed distribution (already normalised,
    so every consumer that applies log_softmax gets them back unchanged).
    """
    memory, state = self.encode(inputs, inputs_mask, train=train)
    batch_size, length = targets.shape
    masks = self.decoder.dropout_masks(batch_size, length, train)
    if ratio is not None:
      key_coins, key_draws = jax.random.split(self.make_rng('dropout'))
      coins = jax.random.uniform(key_coins, (batch_size, length))
      # One key per step (the same in every row: categorical draws rows independently), time on axis 1 as scanned.
      keys = jnp.broadcast_to(jax.random.split(key_draws, length)[None], (batch_size, length, 2))
      start = jnp.full((batch_size,), data.BOS_ID, targets.dtype)
      xs = (shift_right(targets), coins, keys, masks)
      _, (logits, attn) = _SCAN_SAMPLED[sample, train](self.decoder, (state, start), xs, memory, ratio)
      return TeacherForced(logits, attn, memory.get('mask'))
    if self.decoder.layerwise:  # time-major from the embedding on, as the RNN layers run
      emb_TxBxE = self.dropout(self.decoder.embed(shift_right(targets).T), deterministic=not train)
      outs, attn = self.decoder.all_steps(state, emb_TxBxE, masks, memory)
      emb = emb_TxBxE.swapaxes(0, 1)
    else:
      emb = self.dropout(self.decoder.embed(shift_right(targets)), deterministic=not train)
      xs = (self.decoder.project_embedding(emb), emb if self.cfg.embed_to_output else None, masks)
      _, (outs, attn) = _SCAN_DECODER[self.cfg.remat](self.decoder, state, xs, memory)
    logits = self.decoder.readout(outs, train=train, emb=emb, attn=attn, memory=memory)
    return TeacherForced(logits, attn, memory.get('mask'))


@flax.struct.dataclass
class TeacherForced:
  """What one teacher-forced pass gives the losses."""

  logits: jax.Array  # float32 [B, T, V]
  attention: jax.Array | None  # [B, T, S'] over the memory's steps; None without attention
  memory_mask: (
    jax.Array | None
  )  # [B, S']: the memory's real steps (subsampled / gridded inputs); None without attention
