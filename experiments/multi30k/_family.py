"""The family of the Multi30k experiments (experiments/multi30k/*.py): data, evaluation and cadence they share."""

import ml_collections

from s2s_jax import config_lib

MULTI30K_TRAIN_EXAMPLES = 29_000


def multi30k_config(
  size: str, *, epochs: int, batch_size: int, tokenizer: str = 'moses', max_vocab_size: int = 0
) -> ml_collections.ConfigDict:
  """Multi30k German -> English (test = test2016): the data, evaluation and cadence shared by its experiments.

  Training lasts `epochs` real epochs (num_train_epochs: steps = epochs x the batches of the bucket plan, counted
  when the data is prepared, e.g. 227 batches of 128 sentences); evaluation (validation loss, which picks best/, and
  BLEU on the whole validation set) runs about once per epoch (every 29,000 / batch_size steps, rounded down to a
  multiple of 50) and at the last step. `size=tiny` keeps the real data but trains 20 steps of tiny batches;
  `small` and `base` are the same here (an experiment with a larger real size sets it itself, e.g. strong.py's
  epochs).
  """
  c = config_lib.base_config()
  c.data.update(
    name='multi30k',
    source_lang='de',
    target_lang='en',
    tokenizer=tokenizer,
    lowercase=True,
    vocab_min_count=2,
    max_vocab_size=max_vocab_size,
    max_src_len=64,
    max_tgt_len=64,
    src_len_policy='truncate',
    tgt_len_policy='truncate',
    batch_size=batch_size,
    eval_batch_size=256,
    num_buckets=0,
  )
  c.eval.update(metric='loss', mode='min', scores='bleu,bleu_tok,chrf', num_decode_examples=1_014)
  steps_per_epoch = MULTI30K_TRAIN_EXAMPLES // batch_size
  c.update(
    num_train_epochs=float(epochs),
    num_train_steps=epochs * steps_per_epoch,
    log_every_steps=50,
    eval_every_steps=steps_per_epoch // 50 * 50 or 50,
    checkpoint_every_steps=steps_per_epoch // 50 * 50 or 50,
  )
  c.decode.update(batch_size=128)
  if size == 'tiny':
    c.data.update(batch_size=16, eval_batch_size=64, num_buckets=2)
    c.update(
      num_train_epochs=0.0, num_train_steps=20, log_every_steps=10, eval_every_steps=20, checkpoint_every_steps=20
    )
    c.eval.num_decode_examples = 64
  return c
