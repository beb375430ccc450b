"""The decoder cell: one time step of every decoder flow, shared by teacher forcing and beam search.

Flows (`model.attention`), for target embedding e_{t-1} and top decoder state h_t:
  none_init    Sutskever et al. 2014: the encoder state only initialises the decoder; output from h_t.
  none_concat  Cho et al. 2014 (and the d2l.ai model): the context c (the top encoder layer's final state) joins the
               RNN input at every step; with `context_to_output` the output layer sees [h_t; c] too.
  bahdanau     query = the previous top state h_{t-1}; c_t = attend(h_{t-1}); RNN input [e_{t-1}; c_t];
               output from [h_t; c_t].
  luong        query = the current top state h_t; c_t = attend(h_t); attentional vector h~_t = tanh(W_c [c_t; h_t])
               feeds the output layer and, with `input_feeding`, joins the next step's RNN input [e_t; h~_t].
With `embed_to_output` the output layer also sees e_{t-1} (as in Cho 2014 and bentrevett's models).

Options of the attention flows (See et al. 2017, for summarization):
  pointer_generator  p(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: x_i = w} a_t[i], p_gen = sigmoid(w [out; e_{t-1}]),
                     over one shared vocabulary (data.shared_vocab): copying works on source ids, so there is no
                     per-sentence extended vocabulary; with subword vocabularies every word can be copied.
  coverage           the coverage vector c_t = sum_{t' < t} a_t' (decoder state) joins the additive / concat score;
                     the training loss can add sum_i min(a_t[i], c_t[i]) (optim.coverage_loss_weight).

The layer-0 input projection of [e; extra] is split as W_e e + W_x extra, so W_e e for every step of a teacher-forced
batch is one matmul outside the recurrence (`project_embedding`), and so is the vocabulary projection (`readout`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from s2s_jax import attention as attention_lib
from s2s_jax import rnn
from s2s_jax import seq2seq_config

State = dict[str, Any]
Memory = dict[str, jax.Array]


class DecoderCell(nn.Module):
  """Target embedding, the stacked recurrent cells, attention and the output layer of the decoder."""

  cfg: seq2seq_config.Seq2SeqConfig
  dropout_keep: Any = None  # 1 - cfg.dropout_rate as a runtime input (rnn.Dropout), or None

  def setup(self):
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    self.embed = nn.Embed(c.tgt_vocab_size, c.embed_dim, dtype=dtype, embedding_init=nn.initializers.normal(stddev=1.0))
    self.cells = [
      rnn.RecurrentCell(c.cell, c.hidden_dim, c.recurrent_init, c.init_scale, dtype, name=f'layer{i}')
      for i in range(c.num_layers)
    ]
    if self.extra_input:
      gates = rnn.num_gates(c.cell) * c.hidden_dim
      self.extra_proj = nn.Dense(gates, use_bias=False, dtype=dtype)
    if c.attention not in attention_lib.NO_ATTENTION:
      self.attention = attention_lib.Attention(
        c.attention_score,
        query_dim=c.hidden_dim,
        attention_dim=c.attention_dim or c.hidden_dim,
        max_src_len=c.max_src_len,
        coverage=c.coverage,
        dtype=dtype,
      )
    if c.pointer_generator:
      self.gen_gate = nn.Dense(1, dtype=dtype)
    if c.attention == 'luong':
      self.combine = nn.Dense(c.hidden_dim, use_bias=False, dtype=dtype)
    if c.tie_embeddings:
      self.tie_proj = nn.Dense(c.embed_dim, use_bias=False, dtype=dtype)
      self.output_bias = self.param('output_bias', nn.initializers.zeros, (c.tgt_vocab_size,))
    else:
      self.output = nn.Dense(c.tgt_vocab_size, dtype=dtype)
    self.dropout = rnn.Dropout(c.dropout_rate, self.dropout_keep)

  @property
  def extra_input(self) -> bool:
    """Whether layer 0 takes more than the embedding: context (bahdanau, none_concat) or the fed h~ (luong)."""
    c = self.cfg
    return c.attention in ('bahdanau', 'none_concat') or (c.attention == 'luong' and c.input_feeding)

  def project_embedding(self, emb: jax.Array) -> jax.Array:
    """Layer-0 input pre-activations from the embedding part of the input; any leading shape."""
    return self.cells[0].input_proj(emb)

  def prepare_memory(
    self, values_BxSxD: jax.Array, mask_BxS: jax.Array, context_BxC: jax.Array, src_ids_BxS: jax.Array | None = None
  ) -> Memory:
    """Everything a decoder step reads from the encoder, with its time-independent matmuls done once."""
    c = self.cfg
    if c.attention == 'none_concat':
      return {'context': context_BxC, 'context_proj': self.extra_proj(context_BxC)}
    if c.attention == 'none_init':
      return {}
    memory = {'values': values_BxSxD, 'keys': self.attention.keys(values_BxSxD), 'mask': mask_BxS}
    if c.pointer_generator:
      memory['src_ids'] = src_ids_BxS
    return memory

  def initial_state(self, rnn_state: tuple[rnn.Carry, ...], memory: Memory) -> State:
    c = self.cfg
    batch_size = rnn_state[0][-1].shape[0]
    state: State = {'rnn': tuple(rnn_state)}
    if c.attention == 'luong' and c.input_feeding:
      state['feed'] = jnp.zeros((batch_size, c.hidden_dim), rnn_state[0][-1].dtype)
    if 'mask' in memory:  # the last attention weights, for analysis and for beam-search outputs
      state['attention'] = jnp.zeros(memory['mask'].shape, jnp.float32)
    if c.coverage:
      state['coverage'] = jnp.zeros(memory['mask'].shape, jnp.float32)
    return state

  def step(
    self, state: State, xs: tuple[jax.Array, jax.Array | None, Any], memory: Memory
  ) -> tuple[State, tuple[jax.Array, jax.Array | None]]:
    """One decoder step. xs = (layer-0 embedding pre-activations, embedding or None, inter-layer dropout masks or None).

    Returns the new state and (the output-layer input for this step, attention weights or None).
    """
    c = self.cfg
    xproj, emb, masks = xs
    context = attn = None
    coverage = state.get('coverage')
    if c.attention == 'bahdanau':
      context, attn = self.attention(state['rnn'][-1][-1], memory['keys'], memory['values'], memory['mask'], coverage)
      xproj = xproj + self.extra_proj(context)
    elif c.attention == 'luong' and c.input_feeding:
      xproj = xproj + self.extra_proj(state['feed'])
    elif c.attention == 'none_concat':
      xproj = xproj + memory['context_proj']
    carries = []
    for i, cell in enumerate(self.cells):
      if i > 0:
        below = carries[-1][-1]
        xproj = cell.input_proj(below if masks is None else below * masks[i - 1])
      carries.append(cell.step(state['rnn'][i], xproj))
    top = carries[-1][-1]
    new_state = dict(state, rnn=tuple(carries))
    if c.attention == 'luong':
      context, attn = self.attention(top, memory['keys'], memory['values'], memory['mask'], coverage)
    out = self.output_features(top, context, None, memory)
    if c.attention == 'luong' and c.input_feeding:
      new_state['feed'] = out  # the attentional vector h~_t, before the embedding joins it
    if c.embed_to_output:
      out = jnp.concatenate([out, emb], axis=-1)
    if attn is not None:
      new_state['attention'] = attn
    if coverage is not None:
      new_state['coverage'] = coverage + attn
    return new_state, (out, attn)

  @property
  def layerwise(self) -> bool:
    """Whether teacher forcing can run the RNN layer by layer, each layer one scan, with attention, the output
    layer and the vocabulary projection for all steps at once after it: true when no step's RNN input depends on
    an attention result (no bahdanau flow, no input feeding, no coverage)."""
    c = self.cfg
    return c.attention in attention_lib.NO_ATTENTION or (
      c.attention == 'luong' and not c.input_feeding and not c.coverage
    )

  def all_steps(
    self, state: State, emb_TxBxE: jax.Array, masks: tuple[jax.Array, ...] | None, memory: Memory
  ) -> tuple[jax.Array, jax.Array | None]:
    """Teacher forcing when `layerwise`, from the time-major target embeddings: what scanning `step` over the
    target gives, (output-layer inputs [B, T, O], attention weights [B, T, S] or None), with every matmul but the
    recurrent one batched over time."""
    c = self.cfg
    xproj = self.project_embedding(emb_TxBxE)
    if c.attention == 'none_concat':
      xproj = xproj + memory['context_proj'][None]
    top = None
    for i, cell in enumerate(self.cells):
      if i > 0:
        xproj = cell.input_proj(top if masks is None else top * masks[i - 1].swapaxes(0, 1))
      top = rnn.scan_steps(cell, state['rnn'][i], xproj, c.remat)[-1]
    top = top.swapaxes(0, 1)  # [B, T, H]: transposed at the hidden width, not at the vocabulary's
    context = attn = None
    if c.attention == 'luong':
      context, attn = self.attention(top, memory['keys'], memory['values'], memory['mask'])
    return self.output_features(top, context, emb_TxBxE.swapaxes(0, 1), memory), attn

  def output_features(
    self, top: jax.Array, context: jax.Array | None, emb: jax.Array | None, memory: Memory
  ) -> jax.Array:
    """The output layer's input, for one step ([B, ...]) or all steps ([B, T, ...]) alike: from the top state h,
    the attention context c of this step and the previous target embedding e: [h; c] (bahdanau), the attentional
    vector tanh(W_c [c; h]) (luong), [h; encoder context] (none_concat with context_to_output), else h; then [...; e]
    with embed_to_output, unless `emb` is None (step() feeds h~ back before adding it)."""
    c = self.cfg
    if c.attention == 'bahdanau':
      out = jnp.concatenate([top, context], axis=-1)
    elif c.attention == 'luong':
      out = jnp.tanh(self.combine(jnp.concatenate([context, top], axis=-1)))
    elif c.attention == 'none_concat' and c.context_to_output:
      ctx = memory['context']  # [B, C], the same at every step
      ctx = ctx.reshape(ctx.shape[:1] + (1,) * (top.ndim - 2) + ctx.shape[1:])
      out = jnp.concatenate([top, jnp.broadcast_to(ctx, top.shape[:-1] + ctx.shape[-1:])], axis=-1)
    else:
      out = top
    if c.embed_to_output and emb is not None:
      out = jnp.concatenate([out, emb], axis=-1)
    return out

  def dropout_masks(self, batch_size: int, length: int, train: bool) -> tuple[jax.Array, ...] | None:
    """Scaled keep-masks [B, T, H] for the inputs of layers 1.. (shared over time when variational)."""
    c = self.cfg
    if not train or c.dropout_rate == 0.0 or c.num_layers == 1:
      return None
    keep = 1.0 - c.dropout_rate if self.dropout_keep is None else self.dropout_keep
    shape = (batch_size, 1 if c.variational_dropout else length, c.hidden_dim)
    masks = []
    for _ in range(c.num_layers - 1):
      m = jax.random.bernoulli(self.make_rng('dropout'), keep, shape).astype(jnp.dtype(c.dtype))
      m = m / rnn.keep_as(keep, m.dtype)
      masks.append(jnp.broadcast_to(m, (batch_size, length, c.hidden_dim)))
    return tuple(masks)

  def readout(
    self,
    out: jax.Array,
    train: bool = False,
    *,
    emb: jax.Array | None = None,
    attn: jax.Array | None = None,
    memory: Memory | None = None,
  ) -> jax.Array:
    """Logits (float32) from output-layer inputs of any leading shape (batch first), as one 2-D matmul.

    With pointer_generator: log-probabilities of the mixture with the copy distribution, which needs the step
    inputs `emb`, the attention weights `attn` [..., S] and memory['src_ids'].
    """
    lead = out.shape[:-1]
    out_2d = self.dropout(out.reshape(-1, out.shape[-1]), deterministic=not train)
    if self.cfg.tie_embeddings:
      logits = self.embed.attend(self.tie_proj(out_2d)) + self.output_bias[None, :]
    else:
      logits = self.output(out_2d)
    logits = logits.astype(jnp.float32).reshape(lead + (logits.shape[-1],))
    if not self.cfg.pointer_generator:
      return logits
    p_gen = jax.nn.sigmoid(self.gen_gate(jnp.concatenate([out, emb.astype(out.dtype)], -1)).astype(jnp.float32))
    copy = copy_distribution(attn.astype(jnp.float32), memory['src_ids'], logits.shape[-1])
    mixed = p_gen * jax.nn.softmax(logits, axis=-1) + (1.0 - p_gen) * copy
    return jnp.log(jnp.maximum(mixed, 1e-30))


def copy_distribution(attn: jax.Array, src_ids_BxS: jax.Array, vocab_size: int) -> jax.Array:
  """Attention weights [B, ..., S] summed onto the vocabulary ids of their source tokens: [B, ..., V]."""
  batch, src_len = src_ids_BxS.shape
  a = attn.reshape(batch, -1, src_len)
  scatter = lambda a_NxS, ids_S: jnp.zeros((a_NxS.shape[0], vocab_size), a_NxS.dtype).at[:, ids_S].add(a_NxS)
  return jax.vmap(scatter)(a, src_ids_BxS).reshape(attn.shape[:-1] + (vocab_size,))
