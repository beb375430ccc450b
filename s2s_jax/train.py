"""Training: `train_and_evaluate`, the loop main.py runs (steps in steps.py, placed on the devices by parallel.py;
evaluation in evaluation.py; early stopping's count in early_stopping.py)."""

import dataclasses
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from s2s_jax import checkpointing
from s2s_jax import compile_cache
from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import early_stopping as early_stopping_lib
from s2s_jax import evaluation
from s2s_jax import metrics as metrics_lib
from s2s_jax import models
from s2s_jax import optim
from s2s_jax import parallel
from s2s_jax import preemption as preemption_lib
from s2s_jax import provenance
from s2s_jax import seeds as seeds_lib
from s2s_jax import sequence_loss
from s2s_jax import steps
from s2s_jax import workdir as workdir_lib
from s2s_jax import workdir_lock
from s2s_jax import writers
from s2s_jax.data import batches
from s2s_jax.data import pipeline


def train_step_fn(config: ml_collections.ConfigDict, tgt_vocab=None):
  """`steps.train_step` as the loop runs it on every device (parallel.data_parallel): (state, batch, hp) -> (state,
  sums), hp = optim.hyperparameters(config) (the same for every seed: vmapped over the seed axis, every seed on the
  same batch, when config.num_seeds > 1).

  The learning rate, its schedule's constants, warmup, clipping norm, weight decay, label smoothing, loss weights,
  the teacher-forcing ratio and its schedule's constants and the dropout rate are read from `hp` inside the step, so
  runs that differ only in them (or in the seed) trace to one program (a persistent compilation cache then serves
  it); the config fixes only the structure (which optimizer and schedule; a value of 0 leaves its part out).
  `tgt_vocab`: the target vocabulary, needed by optim.sequence_cost=chrf only."""
  o = config.optim
  model = models.Seq2Seq(config_lib.model_config(config))
  sequence = sequence_loss.settings(config, model, tgt_vocab)

  def step(state, batch, hp):
    return steps.train_step(
      state,
      batch,
      label_smoothing=hp['label_smoothing'] if o.label_smoothing else 0.0,
      label_confidence=hp['label_confidence'],
      grad_accum_steps=o.grad_accum_steps,
      skip_nonfinite=o.skip_nonfinite,
      coverage_loss_weight=hp['coverage_loss_weight'] if o.coverage_loss_weight else 0.0,
      doubly_stochastic_weight=hp['doubly_stochastic_weight'] if o.doubly_stochastic_weight else 0.0,
      teacher_forcing=optim.make_teacher_forcing(o, hp),
      scheduled_sampling_sample=o.scheduled_sampling_sample,
      sequence=sequence,
      sequence_sharpness=hp['sequence_sharpness'],
      sequence_token_weight=hp['sequence_token_weight'],
      tx=optim.make_optimizer(o, config.num_train_steps, hp),
      apply_fn=model.clone(dropout_keep=hp['dropout_keep']).apply if config.model.dropout_rate else None,
    )

  return step if config.num_seeds == 1 else jax.vmap(step, in_axes=(0, None, None))


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False, lock_wait_s: float = 0.0
) -> None:
  """Trains, evaluates and checkpoints; resumes from `workdir`; ends with the test evaluation and DONE.

  One run per workdir (workdir_lock.WorkdirLock; a busy workdir raises WorkdirBusyError before anything is written;
  `lock_wait_s`: how long to wait for a lock of another host to expire). A workdir whose finished or checkpointed
  run has lost its checkpoints raises workdir.NotResumableError before anything is written. SIGTERM / SIGINT stop
  cleanly at any stage and return without DONE: inside the training loop after checkpointing the current step,
  elsewhere where nothing is lost; run again to continue (after the last step, only the test evaluation is redone).
  A run whose lock was taken over or removed raises workdir_lock.LockLost at its next step or write, having written
  nothing more; one whose lock could not be refreshed for half its expiry stops as if preempted, then raises
  LockLost. With config.num_seeds > 1 the seeds train as one vmapped program (s2s_jax/seeds.py).
  """
  start_time = time.time()
  config = workdir_lib.resolve_config(config)
  config_checks.check_batch_sizes(config, jax.device_count())
  with preemption_lib.Preemption(workdir) as preemption:
    lock = None
    try:
      with workdir_lock.hold(workdir, wait_s=lock_wait_s, on_unrefreshed=preemption.request) as lock:
        _train_and_evaluate(config, workdir, allow_config_change, start_time, preemption, lock)
    except preemption_lib.Preempted as e:
      logging.warning('%s', e)
    if lock is not None and lock.unrefreshed:
      raise workdir_lock.LockLost(
        f'{lock.unrefreshed}: the run stopped as if preempted (in training with a checkpoint of the current step). '
        'Run the same command to continue once the workdir can be written again.',
        abandon=False,
      )


def _train_and_evaluate(
  config, workdir: str, allow_config_change: bool, start_time: float, preemption, lock: workdir_lock.WorkdirLock
) -> None:
  workdir_lib.check_resumable(workdir, config.num_seeds)
  compile_cache.count_compiles()
  compiles_before = compile_cache.stats()
  with preemption.immediate('during data preparation'):
    data = pipeline.prepare(
      config.data,
      vocab_dir=workdir,
      for_training=True,
      batch_multiple=jax.device_count() * config.optim.grad_accum_steps,
    )
  workdir_lib.set_data_fields(config, data)
  lock.check()
  workdir_lib.check_and_write(workdir, config, data, allow_config_change)
  model = models.Seq2Seq(config_lib.model_config(config))
  tx = optim.make_optimizer(config.optim, config.num_train_steps)
  train_iter = batches.train_iterator(
    data, config.data.batch_size, config.seed, jax.process_index(), jax.process_count(), config.data.num_workers
  )
  mngr = checkpointing.make_manager(workdir, config.keep_checkpoints)
  with preemption.immediate('while creating or restoring the train state'):
    state = seeds_lib.create_states(config, model, tx, data.src_len, data.tgt_len)
    if config.init.from_workdir and mngr.latest_step() is None:  # a new run from another's parameters
      state = workdir_lib.init_params(state, config, workdir, data)
    state = checkpointing.restore_or_init(mngr, state, train_iter)
  first_step = int(np.max(state.step))
  early_stopping = early_stopping_lib.EarlyStopping(
    config.eval.patience, seeds_lib.run_dirs(config, workdir), first_step
  )
  if (first_step >= config.num_train_steps or early_stopping.reached()) and workdir_lib.is_done(workdir):
    logging.info('%s is DONE at step %d; nothing to do.', workdir, first_step)
    return
  lock.check()
  workdir_lib.clear_done(workdir)
  logging.info(
    'Training from step %d to %d on %d device(s), %d seed(s).',
    first_step,
    config.num_train_steps,
    jax.device_count(),
    config.num_seeds,
  )
  runs = seeds_lib.SeedRuns(config, workdir, start_time, first_step, guard=lock.check)
  loop = _Loop(
    config=config,
    mngr=mngr,
    train_iter=train_iter,
    runs=runs,
    saves=workdir_lib.SaveRecorder(workdir, runs.dirs),
    evaluator=evaluation.Evaluator(model, data, config),
    early_stopping=early_stopping,
    preemption=preemption,
    lock=lock,
  )
  state, last_step = loop.train(state, first_step)
  if state is None:  # stopped with a checkpoint
    _record_compiles(workdir, compiles_before, lock)
    runs.close()
    return
  # Every process logs a digest of its replica of the final parameters: data parallelism keeps them identical
  # (the multi-host test compares the digests of all processes).
  logging.info(
    'Process %d: parameters at step %d have sha256 %s',
    jax.process_index(),
    last_step,
    checkpointing.params_sha256(parallel.unreplicate(state.params)),
  )
  if (store := data.splits['train'].store) is not None and not config.data.num_workers:
    # Each process reads only its rows of every global batch (the multi-host test compares the counts).
    logging.info('Process %d read %d training records from the id cache.', jax.process_index(), store.reads)
  loop.test(last_step)
  _record_compiles(workdir, compiles_before, lock)
  lock.check()
  workdir_lib.mark_done(workdir)


def _record_compiles(workdir: str, before: dict, lock: workdir_lock.WorkdirLock) -> None:
  """Logs what this start compiled and loaded from the persistent cache, and adds it to provenance.json."""
  stats = compile_cache.stats(since=before)
  logging.info('Compiles of this start: %s.', compile_cache.summary(stats))
  lock.check()
  if jax.process_index() == 0:
    provenance.record_compiles(workdir, stats)


@dataclasses.dataclass
class _Loop:
  """The training loop of one start of a run and what it owns: the checkpoint manager and the data iterator it
  saves, the seeds' runs (metric writers, best/ managers) and saves.json, the evaluator, early stopping, the
  preemption handler (signals, the STOP file) and the workdir lock. `train` runs the steps; `test` follows them."""

  config: ml_collections.ConfigDict
  mngr: Any  # checkpoints/ (checkpointing.make_manager)
  train_iter: Any  # batches.train_iterator, saved with every checkpoint
  runs: seeds_lib.SeedRuns
  saves: workdir_lib.SaveRecorder
  evaluator: evaluation.Evaluator
  early_stopping: early_stopping_lib.EarlyStopping
  preemption: preemption_lib.Preemption
  lock: workdir_lock.WorkdirLock

  def __post_init__(self):
    c = self.config
    step_fn = train_step_fn(c, self.evaluator.data.tgt_vocab)
    self.p_train_step = parallel.CompiledByShape(
      parallel.data_parallel(step_fn, in_axes=(0, 0, None), donate_argnums=(0,)), 'train step'
    )
    self.hp = optim.hyperparameters(c)
    self.schedule = optim.make_schedule(c.optim, c.num_train_steps)
    self.tf_schedule = optim.make_teacher_forcing(c.optim)

  def train(self, state, first_step: int):
    """Trains from first_step to num_train_steps, or until early stopping (eval.patience); returns (the final
    replicated state, its step), or (None, step) when a signal stopped it (after a checkpoint of the current step).

    At a step that both validates and checkpoints, validation (and the update of best/) comes first and the
    checkpoint waits for best/ to be written: a restored step N has always been validated, so a kill during
    validation only repeats training from the previous checkpoint (deterministically) and never skips an evaluation.
    """
    c = self.config
    state = parallel.replicate(state)
    if self.early_stopping.reached():
      logging.info('Early stopping already reached at step %d (eval.patience=%d).', first_step, c.eval.patience)
      return state, first_step
    progress, tick, compile_at_tick = writers.Progress(first_step, c.num_train_steps), time.time(), 0.0
    for step in range(first_step + 1, c.num_train_steps + 1):
      state, _ = self.p_train_step(state, parallel.shard_batch(next(self.train_iter)), self.hp)
      is_last = step == c.num_train_steps
      logs = step % c.log_every_steps == 0 or is_last
      if jax.process_count() > 1 and logs:
        self.lock.sync()  # process 0 watches the lock; every process acts on it at the same step
      self.lock.check()
      if logs:
        state = self._log(step, state, tick, compile_at_tick)
        logging.info('%s', progress.line(step, self.p_train_step.seconds))
      if step % c.eval_every_steps == 0 or is_last:
        self._validate(step, state)
        if not is_last and self.early_stopping.reached():
          self._stop_early(step)
          is_last = True
        if not is_last:
          self.preemption.read_stop_file()  # a search driver that cannot signal this run asks it to stop (DIR/STOP)
      if step % c.checkpoint_every_steps == 0 or is_last:
        self._checkpoint(step, state, force=is_last)
      if self.preemption.requested:
        self._stop_for_preemption(step, state)
        return None, step
      if is_last:
        return state, step
      if step % c.log_every_steps == 0:  # rate and ETA measure training only (compiles excluded)
        tick, compile_at_tick = time.time(), self.p_train_step.seconds
    return state, first_step  # reached only when no step was left to train

  def _log(self, step: int, state, tick: float, compile_at_tick: float):
    """Writes each seed's train/* metrics summed on device since the last log and returns `state` with the sums
    reset. Pulling the sums is the loop's only host sync; the seconds since `tick` are measured after it (every
    step dispatched so far has run), less the compiles since then."""
    self.saves.update()  # the checkpoints committed since the last log
    sums = jax.device_get(parallel.unreplicate(state.log_sums))
    seconds = time.time() - tick - (self.p_train_step.seconds - compile_at_tick)
    lr = float(self.schedule(step - 1))
    teacher_forcing = None if self.tf_schedule is None else float(self.tf_schedule(step - 1))
    for k, writer in enumerate(self.runs.writers):
      seed_sums = self.runs.pick(sums, k, replicated=False)
      skip = self.config.optim.skip_nonfinite
      writer.write_scalars(step, _train_scalars(seed_sums, seconds, lr, teacher_forcing, self.mngr.latest_step(), skip))
    return state.replace(log_sums=parallel.replicate(seeds_lib.empty_log_sums(self.runs.num)))

  def _validate(self, step: int, state) -> None:
    """Validates each seed (eval/* metrics), saves a better one to its best/ and records it for early stopping."""
    logging.info('Validating step %d.', step)
    key = f'eval/{self.config.eval.metric}'
    for k, (writer, best_mngr) in enumerate(zip(self.runs.writers, self.runs.best)):
      params = self.runs.pick(state.params, k)
      scores = self.evaluator.validate(params, step, writer)
      improved = checkpointing.is_better(scores[key], checkpointing.best_value(best_mngr, key), self.config.eval.mode)
      if improved:
        self.lock.check()
        checkpointing.save_best(best_mngr, step, parallel.unreplicate(params), scores)
      self.early_stopping.record(k, step, improved)

  def _stop_early(self, step: int) -> None:
    logging.warning(
      'Early stopping at step %d: %d validations without a better eval/%s (eval.patience).',
      step,
      self.config.eval.patience,
      self.config.eval.metric,
    )
    for writer in self.runs.writers:
      writer.write_scalars(step, {'eval/stopped_early': 1.0})

  def _checkpoint(self, step: int, state, force: bool) -> None:
    """Saves `step` once every best/ is written (validation before checkpoint: see `train`)."""
    for best_mngr in self.runs.best:
      best_mngr.wait_until_finished()
    self.lock.check()
    logging.info('Saving checkpoint %d.', step)
    checkpointing.save(self.mngr, parallel.unreplicate(state), self.train_iter, force=force)

  def _stop_for_preemption(self, step: int, state) -> None:
    """Checkpoints the current step (any step: the log sums are part of the state) and says how to resume."""
    self.lock.check()
    if self.mngr.latest_step() != step:
      checkpointing.save(self.mngr, parallel.unreplicate(state), self.train_iter, force=True)
    self.mngr.wait_until_finished()
    self.lock.check()
    self.saves.update()
    logging.warning(
      '%s: stopped at step %d with a checkpoint; run the same command to resume.', self.preemption.signal_name, step
    )

  def test(self, step: int) -> None:
    """After the last step: waits for the checkpoints, then evaluates each seed's best checkpoint on the test
    splits and marks the seed DONE; closes the managers and writers."""
    self.mngr.wait_until_finished()
    self.lock.check()
    self.saves.update()
    try:
      for best_mngr in self.runs.best:
        best_mngr.wait_until_finished()
      with self.preemption.immediate('during the test evaluation (a re-run redoes only the test evaluation)'):
        for k, folder in enumerate(self.runs.dirs):
          self.lock.check()
          self.evaluator.test(folder, step, self.runs.writers[k])
          self.lock.check()
          workdir_lib.mark_done(folder)
    except workdir_lock.LockLost:
      raise  # nothing more is written, not even what the writers buffer
    except BaseException:
      self.runs.close()
      self.mngr.close()
      raise
    self.runs.close()
    self.mngr.close()


def _train_scalars(
  log_sums: dict[str, Any],
  seconds: float,
  lr: float,
  teacher_forcing: float | None,
  last_checkpoint: int | None,
  skip_nonfinite: bool,
) -> dict[str, float]:
  """The train/* metrics of one seed from its sums since the last log, over `seconds` of training; a non-finite
  loss or gradient raises FloatingPointError naming the last good checkpoint (unless skip_nonfinite)."""
  sums = {k: float(v) for k, v in log_sums.items()}
  if sums['first_nonfinite_step'] >= 0 and not skip_nonfinite:
    raise FloatingPointError(
      f'Non-finite training loss or gradient at step {int(sums["first_nonfinite_step"])}; the last good checkpoint '
      f'is step {last_checkpoint}. Lower the learning rate, check the data, or set optim.skip_nonfinite=True.'
    )
  scalars = {f'train/{k}': v for k, v in metrics_lib.finalize_token_sums(sums).items()}
  kept = max(sums['steps'] - sums['skipped'], 1)
  scalars.update(
    {
      'train/grad_norm': sums['grad_norm_sum'] / kept,
      'train/learning_rate': lr,
      'train/steps_per_s': sums['steps'] / seconds,
      'train/target_tokens_per_s': sums['num_tokens'] / seconds,
    }
  )
  if skip_nonfinite:
    scalars['train/skipped_updates'] = sums['skipped']
  if teacher_forcing is not None:  # scheduled sampling: the ratio of the last step
    scalars['train/teacher_forcing_ratio'] = teacher_forcing
  return scalars
