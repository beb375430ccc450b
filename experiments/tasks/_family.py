"""The family of the generated sequence tasks (experiments/tasks/*.py): one config, sized by `size`."""

import ml_collections

from s2s_jax import config_lib

# embed, hidden, layers, (min_len, max_len) or max_digits, train examples, eval examples, steps
_TASK_SIZES = {
  'tiny': (16, 32, 1, (1, 6), 2, 2_000, 200, 40),
  'small': (32, 128, 1, (1, 20), 3, 50_000, 1_000, 3_000),
  'base': (64, 256, 2, (10, 100), 5, 200_000, 2_000, 20_000),
}


def task_config(task: str, arg: str | None) -> ml_collections.ConfigDict:
  """The shared config of the generated sequence tasks (copy, reverse, sort, addition).

  A Luong-attention LSTM with a bidirectional encoder; `attention=none_init` and friends can be set from the
  command line to compare with a fixed-size context.
  """
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, layers, (min_len, max_len), max_digits, num_train, num_eval, num_steps = _TASK_SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name=task,
    num_train_examples=num_train,
    num_eval_examples=num_eval,
    task_min_len=min_len,
    task_max_len=max_len,
    task_num_symbols=20,
    task_max_digits=max_digits,
  )
  if task == 'addition':
    c.data.update(tokenizer='char', max_src_len=2 * max_digits + 2, max_tgt_len=max_digits + 2)
  else:
    c.data.update(tokenizer='word', max_src_len=max_len + 1, max_tgt_len=max_len + 1)
  c.data.update(batch_size=64, eval_batch_size=256)
  c.model.update(
    cell='lstm',
    num_layers=layers,
    bidirectional=True,
    bridge='dense',
    attention='luong',
    attention_score='general',
    input_feeding=True,
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
  )
  c.optim.update(optimizer='adam', learning_rate=2e-3, schedule='cosine', warmup_steps=100)
  c.decode.update(beam_size=1, length_alpha=0.0)
  c.eval.update(metric='exact_match', mode='max', num_decode_examples=512)
  c.update(num_train_steps=num_steps, log_every_steps=100, eval_every_steps=1_000, checkpoint_every_steps=1_000)
  if arg.size == 'tiny':
    config_lib.shrink_cadence_to_tiny(c)
  return c
