"""Long inputs: copy (and reverse) sequences of 10-100 symbols with attention (Bahdanau, Luong) and with a fixed
context (none_init, none_concat); the report shows exact match by source length.

  python scripts/sweep.py --sweep=experiments/sweeps/long_sequences.py:size=small --root=/tmp/long
  python scripts/report.py --root=/tmp/long --baseline=attention=none_concat
`task=copy|reverse|both` picks the tasks; by default `small` runs `copy` only (the 4 flows fit the 30-minute budget
of a 2-core CPU; `task=both` takes twice as long) and `tiny` / `base` run both. Measured: README.
"""

from s2s_jax import config_lib
from s2s_jax import sweep_lib

CONFIG = 'experiments/tasks/reverse.py'

# size: (hidden, steps, batch, train examples, default tasks). On the 2-core CPU a `small` step of batch 128 costs
# about 0.25 s (fixed context), 0.45 s (Luong) and 0.75 s (Bahdanau, additive scorer of hidden / 2 units):
# 700 steps of the 4 flows on one task took 21.8 minutes (README).
_SIZES = {
  'tiny': (32, 40, 64, 2_000, 'both'),
  'small': (128, 700, 128, 20_000, 'copy'),
  'base': (256, 20_000, 64, 200_000, 'both'),
}
_TASKS = {'copy': ['copy'], 'reverse': ['reverse'], 'both': ['copy', 'reverse']}


def get_sweep(arg: str | None = None) -> list[dict]:
  parsed = config_lib.parse_arg(arg, size='small', task='')
  size = parsed.size
  hidden, steps, batch, examples, default_task = _SIZES[size]
  if (parsed.task or default_task) not in _TASKS:
    raise ValueError(f'task={parsed.task!r} is not one of {sorted(_TASKS)}.')
  tasks = _TASKS[parsed.task or default_task]
  lengths = (10, 30) if size == 'tiny' else (10, 100)
  common = sweep_lib.points(
    {
      'data.task_min_len': lengths[0],
      'data.task_max_len': lengths[1],
      'data.max_src_len': lengths[1] + 1,
      'data.max_tgt_len': lengths[1] + 1,
      'data.num_train_examples': examples,
      'data.num_buckets': 4,
      'data.batch_size': batch,
      'model.hidden_dim': hidden,
      'model.num_layers': 1,
      'model.input_feeding': False,
      'optim.schedule': 'constant',
      'num_train_steps': steps,
      'eval_every_steps': steps,
      'checkpoint_every_steps': steps // 2,
      'log_every_steps': steps // 10,
    }
  )
  flows = sweep_lib.points(
    {'model.attention': 'none_init'},
    {'model.attention': 'none_concat', 'model.context_to_output': True},
    {'model.attention': 'bahdanau', 'model.attention_score': 'additive', 'model.attention_dim': hidden // 2},
    {'model.attention': 'luong', 'model.attention_score': 'general'},
  )
  return sweep_lib.product(sweep_lib.axis('data.name', tasks), flows, common)
