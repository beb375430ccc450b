"""Optimizers and learning-rate schedules from `config.optim` (CONVENTIONS §3)."""

import jax.numpy as jnp
import optax


def make_schedule(o, num_train_steps: int) -> optax.Schedule:
  """A linear warmup over `warmup_steps`, then constant | rsqrt | halving | cosine."""
  lr, warmup = o.learning_rate, o.warmup_steps
  if o.schedule == 'constant':
    after = optax.constant_schedule(lr)
  elif o.schedule == 'rsqrt':  # lr * sqrt(warmup / step) after the warmup (Vaswani et al. 2017)
    scale = max(warmup, 1)
    after = lambda count: lr * (scale / (count + scale)) ** 0.5
  elif o.schedule == 'halving':  # tensorflow/nmt style: multiply by decay_factor every decay_every_steps
    start = max(o.decay_start_steps - warmup, 0)
    after = optax.exponential_decay(lr, o.decay_every_steps, o.decay_factor, transition_begin=start, staircase=True)
  elif o.schedule == 'cosine':
    after = optax.cosine_decay_schedule(lr, max(num_train_steps - warmup, 1))
  else:
    raise ValueError(f'Unknown optim.schedule {o.schedule!r}.')
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_teacher_forcing(o) -> optax.Schedule | None:
  """The teacher-forcing ratio by training step (Bengio et al. 2015's schedules), or None for plain teacher
  forcing (constant ratio 1: the teacher-forced fast paths, exactly as without scheduled sampling)."""
  ratio, k, floor = o.teacher_forcing_ratio, o.teacher_forcing_k, o.teacher_forcing_floor
  if o.teacher_forcing == 'constant':
    return None if ratio == 1.0 else (lambda step: jnp.full((), ratio, jnp.float32))
  if o.teacher_forcing == 'linear':
    decay = lambda step: ratio - k * step
  elif o.teacher_forcing == 'exponential':
    decay = lambda step: k ** jnp.asarray(step, jnp.float32)
  elif o.teacher_forcing == 'inverse_sigmoid':
    decay = lambda step: k / (k + jnp.exp(jnp.asarray(step, jnp.float32) / k))
  else:
    raise ValueError(f'Unknown optim.teacher_forcing {o.teacher_forcing!r}.')
  return lambda step: jnp.clip(jnp.asarray(decay(step), jnp.float32), floor, 1.0)


def make_optimizer(o, num_train_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping (when grad_clip_norm > 0) followed by the optimizer on the schedule."""
  lr = make_schedule(o, num_train_steps)
  if o.optimizer == 'adam':
    opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.optimizer == 'adamw':
    opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  elif o.optimizer == 'sgd':
    opt = optax.sgd(lr, momentum=o.momentum or None)
  elif o.optimizer == 'adadelta':  # Zeiler 2012, as used by Bahdanau et al. 2015 (rho 0.95, eps 1e-6)
    opt = optax.adadelta(lr, rho=0.95, eps=1e-6)
  else:
    raise ValueError(f'Unknown optim.optimizer {o.optimizer!r}.')
  if o.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), opt)
  return opt
