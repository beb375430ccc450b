"""Training: `train_and_evaluate`, the loop main.py runs (steps in steps.py, evaluation in evaluation.py)."""
import functools
import os
import time
from typing import Any

from absl import logging
import flax
import jax
import ml_collections
import numpy as np

from s2s_jax import checkpointing
from s2s_jax import config_lib
from s2s_jax import evaluation
from s2s_jax import metrics as metrics_lib
from s2s_jax import models
from s2s_jax import optim
from s2s_jax import steps
from s2s_jax import workdir as workdir_lib
from s2s_jax import writers
from s2s_jax.data import pipeline


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
  data = pipeline.prepare(config.data, vocab_dir=workdir,
                          batch_multiple=jax.device_count() * config.optim.grad_accum_steps)
  workdir_lib.set_data_fields(config, data)
  workdir_lib.check_and_write(workdir, config, data, allow_config_change)
  model = models.Seq2Seq(config_lib.model_config(config))
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  state = steps.create_train_state(jax.random.PRNGKey(config.seed), model, tx, data.src_len, data.tgt_len)
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
      functools.partial(steps.train_step, label_smoothing=config.optim.label_smoothing,
                        grad_accum_steps=config.optim.grad_accum_steps),
      axis_name='batch', donate_argnums=(0,))
  evaluator = evaluation.Evaluator(model, data, config, writer)
  state = flax.jax_utils.replicate(state)
  progress = writers.Progress(first_step, config.num_train_steps)
  pending, tick = [], time.time()
  for step in range(first_step + 1, config.num_train_steps + 1):
    state, sums = p_train_step(state, steps.shard_batch(next(train_iter)))
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
