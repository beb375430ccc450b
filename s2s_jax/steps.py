"""The pure, compiled pieces of training and decoding: train state, train/eval/predict steps.

Step functions are module-level and pure; static arguments are bound with functools.partial. `axis_name=None` is
the jit path (tests, one device), 'batch' (parallel.AXIS) the data-parallel path (parallel.py). Losses are sums:
gradients and token counts are psum'ed and divided by the GLOBAL token count, so an update does not depend on how
tokens split over devices.
(Kept apart from train.py so evaluation.py can use them without an import cycle.)
"""

import functools

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from s2s_jax import data as data_lib
from s2s_jax import decode
from s2s_jax import encoders
from s2s_jax import metrics as metrics_lib
from s2s_jax import models
from s2s_jax import parallel
from s2s_jax import sampling
from s2s_jax import sequence_loss

Batch = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  rng: jax.Array  # base key of dropout masks; folded with the step and the global device index
  log_sums: dict[str, jax.Array]  # metric sums since the last log (part of every checkpoint: exact resume)


def empty_log_sums() -> dict[str, jax.Array]:
  """Summed training metrics since the last log, the number of steps and skipped updates, the first bad step."""
  zero = jnp.zeros((), jnp.float32)
  return {
    'loss_sum': zero,
    'correct_sum': zero,
    'num_tokens': zero,
    'grad_norm_sum': zero,
    'steps': jnp.zeros((), jnp.int32),
    'skipped': jnp.zeros((), jnp.int32),
    'first_nonfinite_step': jnp.full((), -1, jnp.int32),
  }


def create_train_state(
  rng: jax.Array, model: models.Seq2Seq, tx: optax.GradientTransformation, src_len: int, tgt_len: int
) -> TrainState:
  init_rng, dropout_rng = jax.random.split(rng)
  mask = jnp.ones((1, src_len), jnp.int32)
  inputs = encoders.for_config(model.cfg).dummy_inputs(1, src_len)
  params = jax.jit(model.init)(init_rng, inputs, mask, jnp.ones((1, tgt_len), jnp.int32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=dropout_rng, log_sums=empty_log_sums())


def _accumulate(
  log_sums: dict[str, jax.Array], sums: dict[str, jax.Array], finite: jax.Array, step: jax.Array, skip_nonfinite: bool
) -> dict[str, jax.Array]:
  """Adds one step's metrics to the running sums; a skipped update adds nothing but its count."""
  keep = finite if skip_nonfinite else True
  out = {k: log_sums[k] + jnp.where(keep, sums[k], 0.0) for k in ('loss_sum', 'correct_sum', 'num_tokens')}
  out['grad_norm_sum'] = log_sums['grad_norm_sum'] + jnp.where(keep, sums['grad_norm'], 0.0)
  out['steps'] = log_sums['steps'] + 1
  out['skipped'] = log_sums['skipped'] + (~finite).astype(jnp.int32) * skip_nonfinite
  first = log_sums['first_nonfinite_step']
  out['first_nonfinite_step'] = jnp.where((first < 0) & ~finite, step.astype(jnp.int32), first)
  return out


def coverage_loss_sum(attn_BxTxS: jax.Array, weights_BxT: jax.Array) -> jax.Array:
  """See et al. 2017: sum over target tokens of sum_i min(a_t[i], c_t[i]), c_t = the weights of steps before t."""
  attn = attn_BxTxS.astype(jnp.float32)
  coverage = jnp.cumsum(attn, axis=1) - attn
  return (jnp.minimum(attn, coverage).sum(-1) * weights_BxT).sum()


def doubly_stochastic_loss_sum(attn_BxTxS: jax.Array, weights_BxT: jax.Array, memory_mask_BxS: jax.Array) -> jax.Array:
  """Xu et al. 2015 (Show, Attend and Tell): sum over examples and real memory steps i of (1 - sum_t a_t[i])^2,
  which pushes every image region (memory step) to be attended to about once over the caption."""
  total_BxS = (attn_BxTxS.astype(jnp.float32) * weights_BxT[..., None]).sum(axis=1)
  return (jnp.square(1.0 - total_BxS) * memory_mask_BxS.astype(jnp.float32)).sum()


def _nonzero(weight) -> bool:
  """Whether a loss weight is on: an array (a runtime input) always is; a Python number when it is not 0."""
  return not isinstance(weight, (int, float)) or weight != 0


def _loss_and_sums(
  params,
  apply_fn,
  batch: Batch,
  rng: jax.Array,
  label_smoothing: float | jax.Array,
  coverage_loss_weight: float | jax.Array = 0.0,
  doubly_stochastic_weight: float | jax.Array = 0.0,
  teacher_forcing_ratio: jax.Array | None = None,
  scheduled_sampling_sample: bool = False,
  label_confidence: jax.Array | None = None,
  sequence: sequence_loss.Settings | None = None,
  sequence_sharpness: float | jax.Array = 1.0,
  sequence_token_weight: float | jax.Array = 1.0,
):
  """The objective (smoothed cross-entropy [+ coverage loss] [+ doubly stochastic regulariser], summed; mixed with
  the sequence-level risk when `sequence` is set) and the logged sums (plain NLL). A `teacher_forcing_ratio` trains
  with scheduled sampling (Seq2Seq.teacher_forcing)."""
  out = apply_fn(
    {'params': params},
    batch['inputs'],
    batch['inputs_mask'],
    batch['targets'],
    train=True,
    ratio=teacher_forcing_ratio,
    sample=scheduled_sampling_sample,
    rngs={'dropout': rng},
    method=models.Seq2Seq.teacher_forcing,
  )
  weights = (batch['targets'] != data_lib.PAD_ID).astype(jnp.float32)
  loss_sum, nll_sum = metrics_lib.weighted_xent(
    out.logits, batch['targets'], weights, label_smoothing, label_confidence
  )
  if _nonzero(coverage_loss_weight):
    loss_sum = loss_sum + coverage_loss_weight * coverage_loss_sum(out.attention, weights)
  if _nonzero(doubly_stochastic_weight):
    loss_sum = loss_sum + doubly_stochastic_weight * doubly_stochastic_loss_sum(out.attention, weights, out.memory_mask)
  if sequence is not None:
    risk_sum = _risk_sum(params, apply_fn, batch, rng, sequence, sequence_sharpness)
    loss_sum = sequence_token_weight * loss_sum + (1.0 - sequence_token_weight) * risk_sum
  return loss_sum, metrics_lib.token_sums(nll_sum, out.logits, batch['targets'], weights)


def _candidates(params, batch: Batch, rng: jax.Array, s: sequence_loss.Settings) -> jax.Array:
  """int32 [B, K, T]: K candidates per source from the model as it is (the n-best of a beam K wide, or K samples at
  temperature 1), as long as the batch's targets at most; no dropout, no gradient."""
  max_len = batch['targets'].shape[1]
  if s.source == 'beam':
    options = decode.DecodeOptions(beam_size=s.candidates, max_len=max_len)
  else:
    options = decode.DecodeOptions(sample=True, num_samples=s.candidates, max_len=max_len)
  source = {k: batch[k] for k in ('inputs', 'inputs_mask')}
  return predict_step(jax.lax.stop_gradient(params), source, rng, model=s.model, options=options)[0]


def _risk_sum(
  params, apply_fn, batch: Batch, rng: jax.Array, s: sequence_loss.Settings, sharpness, candidates=None
) -> jax.Array:
  """sum over sources of |reference| x expected risk over {reference} + K candidates (s2s_jax/sequence_loss.py);
  the candidates [B, K, T] are searched unless given."""
  refs_BxT = batch['targets']
  b, t = refs_BxT.shape
  if candidates is None:
    candidates = _candidates(params, batch, jax.random.fold_in(rng, 1), s)
  cand_BxCxT = jnp.concatenate([refs_BxT[:, None], candidates], axis=1)
  c = cand_BxCxT.shape[1]
  tile = functools.partial(jnp.repeat, repeats=c, axis=0)
  cand_NxT = cand_BxCxT.reshape(b * c, t)
  out = apply_fn(
    {'params': params},
    tile(batch['inputs']),
    tile(batch['inputs_mask']),
    cand_NxT,
    train=True,
    rngs={'dropout': jax.random.fold_in(rng, 2)},
    method=models.Seq2Seq.teacher_forcing,
  )
  logp_BxC = sequence_loss.sequence_log_probs(out.logits, cand_NxT).reshape(b, c)
  cost_BxC = sequence_loss.costs(s, cand_BxCxT, refs_BxT)
  risk_B = sequence_loss.expected_risk(logp_BxC, cost_BxC, sequence_loss.first_occurrences(cand_BxCxT), sharpness)
  return jnp.sum((refs_BxT != data_lib.PAD_ID).sum(axis=1) * risk_B)


def train_step(
  state: TrainState,
  batch: Batch,
  *,
  label_smoothing: float | jax.Array = 0.0,
  grad_accum_steps: int = 1,
  skip_nonfinite: bool = False,
  coverage_loss_weight: float | jax.Array = 0.0,
  doubly_stochastic_weight: float | jax.Array = 0.0,
  teacher_forcing=None,
  scheduled_sampling_sample: bool = False,
  label_confidence: jax.Array | None = None,
  sequence: sequence_loss.Settings | None = None,
  sequence_sharpness: float | jax.Array = 1.0,
  sequence_token_weight: float | jax.Array = 1.0,
  tx: optax.GradientTransformation | None = None,
  apply_fn=None,
  axis_name: str | None = 'batch',
) -> tuple[TrainState, metrics_lib.Metrics]:
  """One optimizer step on this device's share of a global batch; returns psum'ed metric sums.

  The sums are also added to `state.log_sums`, with an on-device finite flag: the first step whose loss or gradient
  is not finite is recorded, and with `skip_nonfinite` such an update leaves parameters and optimizer state as
  they were (and is counted). `teacher_forcing` (optim.make_teacher_forcing: step -> ratio, or None) turns on
  scheduled sampling; `sequence` (sequence_loss.settings) mixes in the sequence-level risk with its sharpness and the
  token-level loss' weight.

  The loss weights and label smoothing are Python numbers (0: the term is not in the program) or arrays (runtime
  inputs, train.train_step_fn; label smoothing then with `label_confidence` = 1 - label_smoothing); `tx` and
  `apply_fn`, when given, replace the state's (an optimizer and a model reading runtime hyperparameters, with the
  same state structure as the state's own).
  """
  apply_fn = state.apply_fn if apply_fn is None else apply_fn
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name:  # distinct dropout masks on every device of every host
    rng = jax.random.fold_in(rng, jax.process_index() * jax.local_device_count() + jax.lax.axis_index(axis_name))
  grad_fn = jax.grad(
    functools.partial(
      _loss_and_sums,
      coverage_loss_weight=coverage_loss_weight,
      doubly_stochastic_weight=doubly_stochastic_weight,
      teacher_forcing_ratio=None if teacher_forcing is None else teacher_forcing(state.step),
      scheduled_sampling_sample=scheduled_sampling_sample,
      label_confidence=label_confidence,
      sequence=sequence,
      sequence_sharpness=sequence_sharpness,
      sequence_token_weight=sequence_token_weight,
    ),
    has_aux=True,
  )
  if grad_accum_steps == 1:
    grads, sums = grad_fn(state.params, apply_fn, batch, rng, label_smoothing)
  else:
    micro = jax.tree.map(lambda x: x.reshape((grad_accum_steps, -1) + x.shape[1:]), batch)

    def accumulate(carry, xs):
      g, s = grad_fn(state.params, apply_fn, xs[0], jax.random.fold_in(rng, xs[1]), label_smoothing)
      return jax.tree.map(jnp.add, carry, (g, s)), None

    zeros = jax.tree.map(
      jnp.zeros_like,
      jax.eval_shape(
        lambda: grad_fn(state.params, apply_fn, jax.tree.map(lambda x: x[0], micro), rng, label_smoothing)
      ),
    )
    (grads, sums), _ = jax.lax.scan(accumulate, zeros, (micro, jnp.arange(grad_accum_steps)))
  if axis_name and jax.lax.axis_size(axis_name) > 1:  # over one device the all-reduce is a copy (8 ms on lstm512)
    grads, sums = jax.lax.psum((grads, sums), axis_name)
  grads = jax.tree.map(lambda g: g / jnp.maximum(sums['num_tokens'], 1.0), grads)
  sums = dict(sums, grad_norm=optax.tree.norm(grads))
  finite = jnp.isfinite(sums['loss_sum']) & jnp.isfinite(sums['grad_norm'])
  if tx is None:
    new_state = state.apply_gradients(grads=grads)
  else:  # TrainState.apply_gradients with another transformation of the same state structure
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  if skip_nonfinite:
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = new_state.replace(
      params=keep(new_state.params, state.params), opt_state=keep(new_state.opt_state, state.opt_state)
    )
  log_sums = _accumulate(state.log_sums, sums, finite, new_state.step, skip_nonfinite)
  return new_state.replace(log_sums=log_sums), sums


def eval_step(params, batch: Batch, *, model: models.Seq2Seq, axis_name: str | None = 'batch'):
  """Summed NLL, correct tokens and token count of a batch (no label smoothing, no dropout)."""
  logits = model.apply({'params': params}, batch['inputs'], batch['inputs_mask'], batch['targets'])
  weights = (batch['targets'] != data_lib.PAD_ID).astype(jnp.float32)
  _, nll_sum = metrics_lib.weighted_xent(logits, batch['targets'], weights)
  sums = metrics_lib.token_sums(nll_sum, logits, batch['targets'], weights)
  return jax.lax.psum(sums, axis_name) if axis_name else sums


def ensemble_step_fn(models_: tuple, params: tuple, memories: tuple, attention: bool):
  """The decoding step of one model, or of an ensemble: the mean of the models' log-probabilities (each model's
  state carried in a tuple, reordered with the beams by the search). The auxiliary output is the first model's
  attention, when asked."""

  def step_fn(ids, states):
    outs = [
      m.apply({'params': p}, ids, s, mem, method=models.Seq2Seq.decode_step)
      for m, p, mem, s in zip(models_, params, memories, states)
    ]
    if len(outs) == 1:
      logits = outs[0][0]
    else:
      logits = jnp.mean(jnp.stack([jax.nn.log_softmax(out[0].astype(jnp.float32), axis=-1) for out in outs]), axis=0)
    new_states = tuple(out[1] for out in outs)
    return (logits, new_states, {'attention': new_states[0]['attention']}) if attention else (logits, new_states)

  return step_fn


def predict_step(
  params,
  batch: Batch | tuple[Batch, ...],
  rng: jax.Array | None = None,
  *,
  model,
  options: decode.DecodeOptions,
  axis_name=None,
):
  """Beam search (greedy when beam_size == 1), or sampling with options.sample: (token ids [B, K, max_len],
  scores [B, K][, attention]), best first (samples: in sample order; K = num_samples).

  `model` and `params` may be tuples of the same length: an ensemble (steps.ensemble_step_fn); `batch` is then one
  batch for every member, or a tuple of each member's own batch of the same inputs (members that encode their
  inputs differently, e.g. with data.reverse_source; inference.EnsembleInputs). With options.return_attention (beam
  search only), a third output holds each hypothesis' attention [B, K, max_len, S] (the first model's). Sampling
  draws from `rng`: one key per batch row ([B] keys: a row's samples depend only on its key, so not on its batch or
  position), or one key for the batch (row b then draws from fold_in(rng, b)); `axis_name` is unused by the search.
  """
  del axis_name  # every row is decoded on its own; nothing crosses devices
  o = options
  models_, params_ = (model, params) if isinstance(model, tuple) else ((model,), (params,))
  batches = batch if isinstance(batch, tuple) else (batch,) * len(models_)
  if len(batches) != len(models_):
    raise ValueError(f'{len(batches)} batches for an ensemble of {len(models_)} models.')
  encoded = [
    m.apply({'params': p}, b['inputs'], b['inputs_mask'], method=models.Seq2Seq.encode)
    for m, p, b in zip(models_, params_, batches)
  ]
  memory_mask = encoded[0][0].get('mask')  # the encoder memory's steps (audio and image encoders subsample the input)
  rows = o.num_samples if o.sample else o.beam_size
  memories = tuple(decode.expand_to_beams(memory, rows) for memory, _ in encoded)
  state = tuple(s for _, s in encoded)
  attention = not o.sample and (o.return_attention or o.coverage_beta > 0)
  step_fn = ensemble_step_fn(models_, params_, memories, attention)
  row_max_len = None
  if o.max_len_a > 0:
    # Source tokens (EOS excluded); the most of any member's (their truncation may differ), whatever their order.
    src_tokens = jnp.max(jnp.stack([b['inputs_mask'].sum(axis=1) for b in batches]), axis=0) - 1
    row_max_len = jnp.clip(jnp.floor(o.max_len_a * src_tokens).astype(jnp.int32) + o.max_len_b, 1, o.max_len)
  common = dict(
    batch_size=batches[0]['inputs'].shape[0],
    bos_id=data_lib.BOS_ID,
    eos_id=data_lib.EOS_ID,
    pad_id=data_lib.PAD_ID,
    row_max_len=row_max_len,
  )
  if o.sample:
    return sampling.sample(step_fn, state, jax.random.PRNGKey(0) if rng is None else rng, o, **common)
  out = decode.beam_search(step_fn, state, o, source_mask=memory_mask if attention else None, **common)
  if o.return_attention:
    seqs, scores, aux = out
    return seqs, scores, aux['attention']
  return out


def make_predict_fn(model, options: decode.DecodeOptions):
  """The data-parallel predict step (one compile per options and batch shape): (params, batch, per-row keys) -> outputs,
  the batch and its keys sharded alike; `model` may be a tuple (an ensemble, with a tuple of parameter trees)."""
  fn = functools.partial(predict_step, model=model, options=options, axis_name=parallel.AXIS)
  return parallel.data_parallel(fn)
