"""The reference model for speed measurements (scripts/benchmark.py): a 2x512 LSTM encoder-decoder.

Vocabularies of 8,000, embeddings of 256, 2-layer unidirectional LSTM encoder and decoder of 512 units, Luong flow
with the `general` score, no input feeding, no dropout, Adam, batch 64, sources and targets of 30 tokens, float32.
Trained on the `copy` task with 7,996 symbols (so both vocabularies have exactly 8,000 entries).

  python scripts/benchmark.py decode --config=experiments/benchmarks/lstm512.py --json=/tmp/decode.json
  python -m s2s_jax.main --config=experiments/benchmarks/lstm512.py --workdir=/tmp/lstm512
Expected: the decoding-speed table of the README (measured numbers there).
"""

import ml_collections

from s2s_jax import config_lib

# embed, hidden, symbols, examples
_SIZES = {'tiny': (16, 32, 60, 2_000), 'small': (256, 512, 7_996, 50_000), 'base': (256, 512, 7_996, 200_000)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, symbols, examples = _SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name='copy',
    tokenizer='word',
    task_num_symbols=symbols,
    task_min_len=29,
    task_max_len=29,
    num_train_examples=examples,
    num_eval_examples=1_000,
    max_src_len=30,
    max_tgt_len=30,
    batch_size=64,
    eval_batch_size=64,
  )
  c.model.update(
    cell='lstm',
    num_layers=2,
    bidirectional=False,
    bridge='copy',
    attention='luong',
    attention_score='general',
    input_feeding=False,
    dropout_rate=0.0,
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
    dtype='float32',
  )
  c.optim.update(optimizer='adam', learning_rate=1e-3, schedule='constant', warmup_steps=0)
  c.decode.update(beam_size=5, length_alpha=0.6, batch_size=64)
  c.eval.update(metric='exact_match', mode='max', num_decode_examples=256)
  c.update(num_train_steps=2_000, log_every_steps=100, eval_every_steps=1_000, checkpoint_every_steps=1_000)
  if arg.size == 'tiny':
    c.data.update(num_eval_examples=200, max_src_len=12, max_tgt_len=12, task_min_len=4, task_max_len=11)
    config_lib.shrink_cadence_to_tiny(c)
  return c
