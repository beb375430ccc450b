"""Multi30k De->En at a size for controlled comparisons on a CPU: the base of the attention, architecture and
decoding sweeps (experiments/sweeps/). A bidirectional GRU encoder (128 per direction), a GRU decoder of 256,
embeddings of 128, dropout 0.3, Bahdanau (additive) attention, word vocabularies of lowercased Moses tokens (min
count 2), Adam 2e-3, batches of 128 in 4 length buckets, greedy decoding; `small` trains 4 epochs with 3 seeds in
one vmapped program.

  python -m s2s_jax.main --config=experiments/multi30k/ablation.py --workdir=/tmp/m30k_ablation
  python scripts/sweep.py --sweep=experiments/sweeps/attention_ablation.py:size=small --root=/tmp/ablation
Measured: README (attention ablation).
"""
import ml_collections

from s2s_jax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  epochs, seeds, embed, hidden = {'tiny': (1, 2, 16, 32), 'small': (4, 3, 128, 256), 'base': (12, 3, 256, 512)}[
      arg.size]
  c = config_lib.multi30k_config(arg.size, epochs=epochs, batch_size=128)
  c.model.update(cell='gru', num_layers=1, bidirectional=True, bridge='dense', attention='bahdanau',
                 attention_score='additive', embed_dim=embed, hidden_dim=hidden, dropout_rate=0.3)
  c.optim.update(optimizer='adam', learning_rate=2e-3, schedule='constant', grad_clip_norm=1.0)
  c.decode.update(beam_size=1, length_alpha=0.0, max_len=64)
  c.eval.update(metric='bleu', mode='max')
  c.num_seeds = seeds
  return c
