"""Training: the train state, the pure step functions, and `train_and_evaluate` (the loop main.py runs).

Step functions are module-level and pure; static arguments are bound with functools.partial. `axis_name=None` is
the jit path (tests, one device), 'batch' the pmap path. Losses are sums: gradients and token counts are psum'ed
and divided by the GLOBAL token count, so an update does not depend on how tokens split over devices.
"""
import functools
import os
import time
from typing import Any

from absl import logging
import flax
from flax.training import common_utils
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from s2s_jax import checkpointing
from s2s_jax import config_lib
from s2s_jax import data as data_lib
from s2s_jax import decode
from s2s_jax import evaluation
from s2s_jax import metrics as metrics_lib
from s2s_jax import models
from s2s_jax import optim
from s2s_jax import workdir as workdir_lib
from s2s_jax import writers
from s2s_jax.data import pipeline

Batch = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  rng: jax.Array  # base key of dropout masks; folded with the step and the global device index


def create_train_state(rng: jax.Array, model: models.Seq2Seq, tx: optax.GradientTransformation, src_len: int,
                       tgt_len: int) -> TrainState:
  init_rng, dropout_rng = jax.random.split(rng)
  inputs = jnp.ones((1, src_len), jnp.int32)
  params = jax.jit(model.init)(init_rng, inputs, inputs, jnp.ones((1, tgt_len), jnp.int32))['params']
  return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=dropout_rng)


def _loss_and_sums(params, apply_fn, batch: Batch, rng: jax.Array, label_smoothing: float):
  logits = apply_fn({'params': params}, batch['inputs'], batch['inputs_mask'], batch['targets'], train=True,
                    rngs={'dropout': rng})
  weights = (batch['targets'] != data_lib.PAD_ID).astype(jnp.float32)
  loss_sum, nll_sum = metrics_lib.weighted_xent(logits, batch['targets'], weights, label_smoothing)
  return loss_sum, metrics_lib.token_sums(nll_sum, logits, batch['targets'], weights)


def train_step(state: TrainState, batch: Batch, *, label_smoothing: float = 0.0, grad_accum_steps: int = 1,
               axis_name: str | None = 'batch') -> tuple[TrainState, metrics_lib.Metrics]:
  """One optimizer step on this device's share of a global batch; returns psum'ed metric sums."""
  rng = jax.random.fold_in(state.rng, state.step)
  if axis_name:  # distinct dropout masks on every device of every host
    rng = jax.random.fold_in(rng, jax.process_index() * jax.local_device_count() + jax.lax.axis_index(axis_name))
  grad_fn = jax.grad(_loss_and_sums, has_aux=True)
  if grad_accum_steps == 1:
    grads, sums = grad_fn(state.params, state.apply_fn, batch, rng, label_smoothing)
  else:
    micro = jax.tree.map(lambda x: x.reshape((grad_accum_steps, -1) + x.shape[1:]), batch)

    def accumulate(carry, xs):
      g, s = grad_fn(state.params, state.apply_fn, xs[0], jax.random.fold_in(rng, xs[1]), label_smoothing)
      return jax.tree.map(jnp.add, carry, (g, s)), None

    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(
        lambda: grad_fn(state.params, state.apply_fn, jax.tree.map(lambda x: x[0], micro), rng, label_smoothing)))
    (grads, sums), _ = jax.lax.scan(accumulate, zeros, (micro, jnp.arange(grad_accum_steps)))
  if axis_name:
    grads, sums = jax.lax.psum((grads, sums), axis_name)
  grads = jax.tree.map(lambda g: g / jnp.maximum(sums['num_tokens'], 1.0), grads)
  sums = dict(sums, grad_norm=optax.global_norm(grads))
  return state.apply_gradients(grads=grads), sums


def eval_step(params, batch: Batch, *, model: models.Seq2Seq, axis_name: str | None = 'batch'):
  """Summed NLL, correct tokens and token count of a batch (no label smoothing, no dropout)."""
  logits = model.apply({'params': params}, batch['inputs'], batch['inputs_mask'], batch['targets'])
  weights = (batch['targets'] != data_lib.PAD_ID).astype(jnp.float32)
  _, nll_sum = metrics_lib.weighted_xent(logits, batch['targets'], weights)
  sums = metrics_lib.token_sums(nll_sum, logits, batch['targets'], weights)
  return jax.lax.psum(sums, axis_name) if axis_name else sums


def predict_step(params, batch: Batch, *, model: models.Seq2Seq, beam_size: int, max_len: int,
                 length_alpha: float) -> tuple[jax.Array, jax.Array]:
  """Beam search (greedy when beam_size == 1): (token ids [B, K, max_len], scores [B, K]), best first."""
  memory, state = model.apply({'params': params}, batch['inputs'], batch['inputs_mask'],
                              method=models.Seq2Seq.encode)
  memory = decode.expand_to_beams(memory, beam_size)

  def step_fn(ids, dec_state):
    return model.apply({'params': params}, ids, dec_state, memory, method=models.Seq2Seq.decode_step)

  return decode.beam_search(step_fn, state, batch_size=batch['inputs'].shape[0], beam_size=beam_size,
                            max_len=max_len, bos_id=data_lib.BOS_ID, eos_id=data_lib.EOS_ID,
                            pad_id=data_lib.PAD_ID, length_alpha=length_alpha)


def make_predict_fn(model: models.Seq2Seq, decode_config, default_max_len: int):
  """The pmapped predict step for a decode config (changing beam or length recompiles; new params do not)."""
  return jax.pmap(functools.partial(
      predict_step, model=model, beam_size=decode_config.beam_size,
      max_len=decode_config.max_len or default_max_len, length_alpha=decode_config.length_alpha))


def _check_batch_sizes(config: ml_collections.ConfigDict) -> None:
  devices = jax.device_count()
  for key in ('batch_size', 'eval_batch_size'):
    size = config.data[key]
    if size % devices or (key == 'batch_size' and (size // devices) % config.optim.grad_accum_steps):
      raise ValueError(f'data.{key}={size} must be a multiple of the device count {devices}'
                       f'{" x optim.grad_accum_steps" if key == "batch_size" else ""}.')


def _log_train(writer, step: int, pending: list[Any], lr: float, seconds: float, progress) -> None:
  """Pulls the accumulated step metrics to the host (the only sync in the loop) and writes them."""
  sums = jax.device_get(flax.jax_utils.unreplicate(pending))
  total = {k: sum(float(s[k]) for s in sums) for k in ('loss_sum', 'correct_sum', 'num_tokens')}
  scalars = {f'train/{k}': v for k, v in metrics_lib.finalize_token_sums(total).items()}
  scalars['train/grad_norm'] = float(np.mean([s['grad_norm'] for s in sums]))
  if not all(np.isfinite([scalars['train/loss'], scalars['train/grad_norm']])):
    raise FloatingPointError(f'Non-finite training loss or gradient before step {step}: {scalars}.')
  scalars.update({'train/learning_rate': lr, 'train/steps_per_s': len(sums) / seconds,
                  'train/target_tokens_per_s': total['num_tokens'] / seconds})
  writer.write_scalars(step, scalars)
  logging.info('%s', progress.line(step))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False) -> None:
  """Trains, evaluates and checkpoints; resumes from `workdir`; ends with the test evaluation and DONE."""
  start_time = time.time()
  config = workdir_lib.resolve_config(config)
  _check_batch_sizes(config)
  os.makedirs(workdir, exist_ok=True)
  data = pipeline.prepare(config.data, vocab_dir=workdir)
  workdir_lib.set_data_fields(config, data)
  workdir_lib.check_and_write(workdir, config, data, allow_config_change)
  model = models.Seq2Seq(config_lib.model_config(config))
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  state = create_train_state(jax.random.PRNGKey(config.seed), model, tx, data.src_len, data.tgt_len)
  train_iter = pipeline.train_iterator(data, config.data.batch_size, config.seed, jax.process_index(),
                                       jax.process_count())
  mngr = checkpointing.make_manager(workdir, config.keep_checkpoints)
  best_mngr = checkpointing.make_best_manager(workdir, f'eval/{config.eval.metric}', config.eval.mode)
  state = checkpointing.restore_or_init(mngr, state, train_iter)
  first_step = int(state.step)
  if first_step >= config.num_train_steps and workdir_lib.is_done(workdir):
    logging.info('%s is DONE at step %d; nothing to do.', workdir, first_step)
    return
  workdir_lib.clear_done(workdir)
  logging.info('Training from step %d to %d on %d device(s).', first_step, config.num_train_steps,
               jax.device_count())
  writer = writers.MetricWriter(workdir, start_time)
  schedule = optim.make_schedule(config.optim, config.num_train_steps)
  p_train_step = jax.pmap(
      functools.partial(train_step, label_smoothing=config.optim.label_smoothing,
                        grad_accum_steps=config.optim.grad_accum_steps),
      axis_name='batch', donate_argnums=(0,))
  evaluator = evaluation.Evaluator(model, data, config, writer)
  state = flax.jax_utils.replicate(state)
  progress = writers.Progress(first_step, config.num_train_steps)
  pending, tick = [], time.time()
  for step in range(first_step + 1, config.num_train_steps + 1):
    state, sums = p_train_step(state, common_utils.shard(next(train_iter)))
    pending.append(sums)
    is_last = step == config.num_train_steps
    if step % config.log_every_steps == 0 or is_last:
      _log_train(writer, step, pending, float(schedule(step - 1)), time.time() - tick, progress)
      pending = []
    if step % config.eval_every_steps == 0 or is_last:
      params = flax.jax_utils.unreplicate(state.params)
      scores = evaluator.validate(state.params, step)
      key = f'eval/{config.eval.metric}'
      if checkpointing.is_better(scores[key], checkpointing.best_value(best_mngr, key), config.eval.mode):
        checkpointing.save_best(best_mngr, step, params, scores)
    if step % config.checkpoint_every_steps == 0 or is_last:
      checkpointing.save(mngr, flax.jax_utils.unreplicate(state), train_iter, force=is_last)
    if pending == []:  # rate and ETA measure training only
      tick = time.time()
  mngr.wait_until_finished()
  best_mngr.wait_until_finished()
  evaluator.test(workdir, config.num_train_steps)
  writer.close()
  mngr.close()
  best_mngr.close()
  workdir_lib.mark_done(workdir)
