"""Long inputs: copy and reverse sequences of 10-100 symbols with attention (Bahdanau, Luong) and with a fixed
context (none_init, none_concat); the report shows exact match by source length.

  python scripts/sweep.py --sweep=experiments/sweeps/long_sequences.py:size=small --root=/tmp/long
  python scripts/report.py --root=/tmp/long --baseline=name=reverse,attention=none_concat
Measured: README. On a 2-core CPU a `small` point takes 4-4.5 minutes, except Bahdanau (11.7 minutes for copy: the
additive score is a [batch, source, 128] tanh per decoder step), so the 8 points
exceed the 30-minute goal (7 of them took 38.6 minutes).
"""
from s2s_jax import config_lib
from s2s_jax import sweep_lib

CONFIG = 'experiments/tasks/reverse.py'

# size: (hidden, steps, batch, train examples). `small` aims at 30 minutes on a 2-core CPU (not yet met, see above);
# its steps are dominated by the scans' per-time-step overhead, hence few steps of large batches.
_SIZES = {'tiny': (32, 40, 64, 2_000), 'small': (128, 600, 128, 20_000), 'base': (256, 20_000, 64, 200_000)}


def get_sweep(arg: str | None = None) -> list[dict]:
  size = config_lib.parse_arg(arg, size='small').size
  hidden, steps, batch, examples = _SIZES[size]
  lengths = (10, 30) if size == 'tiny' else (10, 100)
  common = sweep_lib.points({'data.task_min_len': lengths[0], 'data.task_max_len': lengths[1],
                             'data.max_src_len': lengths[1] + 1, 'data.max_tgt_len': lengths[1] + 1,
                             'data.num_train_examples': examples, 'data.num_buckets': 4, 'data.batch_size': batch,
                             'model.hidden_dim': hidden, 'model.num_layers': 1, 'model.input_feeding': False,
                             'optim.schedule': 'constant', 'num_train_steps': steps, 'eval_every_steps': steps,
                             'checkpoint_every_steps': steps // 2, 'log_every_steps': steps // 10})
  flows = sweep_lib.points({'model.attention': 'none_init'},
                           {'model.attention': 'none_concat', 'model.context_to_output': True},
                           {'model.attention': 'bahdanau', 'model.attention_score': 'additive',
                            'model.attention_dim': hidden // 2},
                           {'model.attention': 'luong', 'model.attention_score': 'general'})
  return sweep_lib.product(sweep_lib.axis('data.name', ['copy', 'reverse']), flows, common)
