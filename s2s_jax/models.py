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

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax import cudnn_rnn
from s2s_jax import data
from s2s_jax import decoder as decoder_lib
from s2s_jax import encoders
from s2s_jax import rnn
from s2s_jax import seq2seq_config


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

  cfg: seq2seq_config.Seq2SeqConfig  # validated where it is built (config_lib.model_config), not in every setup
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
