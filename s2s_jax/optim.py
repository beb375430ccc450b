"""Optimizers and learning-rate schedules from `config.optim` (CONVENTIONS §3).

The values sweeps and searches vary without changing shapes (`hyperparameters`) are runtime inputs of the train
step, so runs that differ only in them (or in the seed) run one compiled program: `make_optimizer`,
`make_teacher_forcing` and the losses take them as arrays (`hp`) inside the step. The config decides only the
structure: the optimizer, the schedule's kind, whether clipping, label smoothing, dropout, a loss term or scheduled
sampling exists at all (a value of 0, or a ratio of 1, keeps its own program without that part). Each runtime formula
is the arithmetic of the constant it replaces, in the same order, with derived constants (1 - rate) computed on the
host as before, so results are unchanged (tests/compile_once_test.py pins them).
"""

from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

# config.optim fields that are runtime inputs of the train step (with model.dropout_rate and num_train_steps)
RUNTIME_FIELDS = (
  'learning_rate',
  'warmup_steps',
  'decay_start_steps',
  'decay_every_steps',
  'decay_factor',
  'grad_clip_norm',
  'weight_decay',
  'label_smoothing',
  'coverage_loss_weight',
  'doubly_stochastic_weight',
  'teacher_forcing_ratio',
  'teacher_forcing_k',
  'teacher_forcing_floor',
  'sequence_sharpness',
  'sequence_token_weight',
)


def hyperparameters(config) -> dict[str, np.ndarray]:
  """The train step's runtime inputs from `config` (float32 scalars): RUNTIME_FIELDS, num_train_steps, and the
  keep probabilities 1 - model.dropout_rate and 1 - optim.label_smoothing (computed here in float64, as the
  constants they replace were)."""
  o = config.optim
  hp: dict[str, Any] = {name: o[name] for name in RUNTIME_FIELDS}
  hp['num_train_steps'] = config.num_train_steps
  hp['label_confidence'] = 1.0 - o.label_smoothing
  hp['dropout_keep'] = 1.0 - config.model.dropout_rate
  hp = {name: np.float32(value) for name, value in hp.items()}
  # XLA turns a division by a constant into a multiplication by its float32 reciprocal; the schedules' divisors are
  # passed as those reciprocals, so the runtime formulas round as the constant ones did.
  decay_steps = np.float32(max(config.num_train_steps - o.warmup_steps, 1))
  divisors = {'warmup': hp['warmup_steps'], 'decay_every': hp['decay_every_steps'], 'cosine': decay_steps}
  for name, divisor in divisors.items():
    with np.errstate(divide='ignore'):
      hp[f'inv_{name}'] = np.float32(1.0) / divisor
  return hp


def runtime_schedule(kind: str, hp) -> optax.Schedule:
  """make_schedule's schedule with every constant read from `hp` (arrays inside the step): the same formulas as the
  optax schedules it mirrors, in the same order of operations (optim_test checks they agree)."""
  lr, warmup = hp['learning_rate'], hp['warmup_steps']
  if kind == 'constant':
    after = lambda count: lr
  elif kind == 'rsqrt':
    scale = jnp.maximum(warmup, 1.0)
    after = lambda count: lr * (scale / (count + scale)) ** 0.5
  elif kind == 'halving':  # optax.exponential_decay(staircase=True); a non-positive period or a factor 0: constant
    start = jnp.maximum(hp['decay_start_steps'] - warmup, 0.0)
    every, factor = hp['decay_every_steps'], hp['decay_factor']

    def after(count):
      decreased = count - start
      decayed = jnp.where(decreased <= 0, lr, lr * jnp.power(factor, jnp.floor(decreased * hp['inv_decay_every'])))
      return jnp.where((every <= 0) | (factor == 0), lr, decayed)
  elif kind == 'cosine':  # optax.cosine_decay_schedule (alpha 0, exponent 1)
    decay_steps = jnp.maximum(hp['num_train_steps'] - warmup, 1.0)

    def after(count):
      count = jnp.minimum(count, decay_steps)
      return lr * ((1 - 0.0) * (0.5 * (1 + jnp.cos(jnp.pi * count * hp['inv_cosine']))) ** 1.0 + 0.0)
  else:
    raise ValueError(f'Unknown optim.schedule {kind!r}.')

  def schedule(count):  # optax.join_schedules of optax.linear_schedule(0, lr, warmup) and `after`; no warmup: after
    warm = (0.0 - lr) * (1 - jnp.clip(count, 0, warmup) * hp['inv_warmup']) ** 1 + lr
    return jnp.where(warmup > 0, jnp.where(count < warmup, warm, after(count - warmup)), after(count))

  return schedule


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


def make_teacher_forcing(o, hp=None) -> optax.Schedule | None:
  """The teacher-forcing ratio by training step (Bengio et al. 2015's schedules), or None for plain teacher
  forcing (constant ratio 1: the teacher-forced fast paths, exactly as without scheduled sampling). With `hp`
  (runtime values, `hyperparameters`) the ratio, k and floor come from it."""
  ratio, k, floor = o.teacher_forcing_ratio, o.teacher_forcing_k, o.teacher_forcing_floor
  if o.teacher_forcing == 'constant' and ratio == 1.0:
    return None
  if hp is not None:
    ratio, k, floor = hp['teacher_forcing_ratio'], hp['teacher_forcing_k'], hp['teacher_forcing_floor']
  if o.teacher_forcing == 'constant':
    return lambda step: jnp.full((), ratio, jnp.float32)
  if o.teacher_forcing == 'linear':
    decay = lambda step: ratio - k * step
  elif o.teacher_forcing == 'exponential':
    decay = lambda step: k ** jnp.asarray(step, jnp.float32)
  elif o.teacher_forcing == 'inverse_sigmoid':
    decay = lambda step: k / (k + jnp.exp(jnp.asarray(step, jnp.float32) / k))
  else:
    raise ValueError(f'Unknown optim.teacher_forcing {o.teacher_forcing!r}.')
  return lambda step: jnp.clip(jnp.asarray(decay(step), jnp.float32), floor, 1.0)


def make_optimizer(o, num_train_steps: int, hp=None) -> optax.GradientTransformation:
  """Global-norm clipping (when grad_clip_norm > 0) followed by the optimizer on the schedule. With `hp` (runtime
  values, `hyperparameters`) the schedule, clipping norm and weight decay read it: the optimizer state has the same
  structure either way (checkpoints of either restore into the other)."""
  lr = make_schedule(o, num_train_steps) if hp is None else runtime_schedule(o.schedule, hp)
  clip_norm, weight_decay = o.grad_clip_norm, o.weight_decay
  if hp is not None:
    clip_norm, weight_decay = hp['grad_clip_norm'], hp['weight_decay']
  if o.optimizer == 'adam':
    opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.optimizer == 'adamw':
    opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=weight_decay)
  elif o.optimizer == 'sgd':
    opt = optax.sgd(lr, momentum=o.momentum or None)
  elif o.optimizer == 'adadelta':  # Zeiler 2012, as used by Bahdanau et al. 2015 (rho 0.95, eps 1e-6)
    opt = optax.adadelta(lr, rho=0.95, eps=1e-6)
  else:
    raise ValueError(f'Unknown optim.optimizer {o.optimizer!r}.')
  if o.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(clip_norm), opt)
  return opt
