"""Multi30k De->En at a size for controlled comparisons on a CPU: the base of the attention, architecture and
decoding sweeps (experiments/sweeps/). A bidirectional GRU encoder (half the decoder size per direction), a GRU
decoder, Bahdanau (additive) attention, word vocabularies of lowercased Moses tokens (min count 2), Adam 2e-3,
batches of 128 in length buckets, greedy decoding, 3 seeds in one vmapped program.
`small` is cut to fit the attention ablation (7 variants) into an hour on a 2-core CPU: 2 epochs, a 128 decoder,
embeddings of 96, dropout 0.2, vocabularies capped at 3,000 words (the output layer dominates the step: at batch
128 x 24 tokens a 256-unit Bahdanau step with 3 seeds took 2.7 s at 5,921 target words; one seed 1.16 s, 0.39 s at
500 words). `base` (12 epochs, decoder 512, embeddings 256, full vocabularies) is meant for a GPU.

  python -m s2s_jax.main --config=experiments/multi30k/ablation.py --workdir=/tmp/m30k_ablation
  python scripts/sweep.py --sweep=experiments/sweeps/attention_ablation.py:size=small --root=/tmp/ablation
Measured: README (attention ablation).
"""

import ml_collections

from s2s_jax import config_lib

_family = config_lib.import_beside(__file__, '_family.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  # size: (epochs, seeds, embed, hidden, vocabulary cap, dropout, length buckets: 0 = the fewest within max_padding)
  epochs, seeds, embed, hidden, vocab, dropout, buckets = {
    'tiny': (1, 2, 16, 32, 0, 0.3, 2),
    'small': (2, 3, 96, 128, 3_000, 0.2, 0),
    'base': (12, 3, 256, 512, 0, 0.3, 0),
  }[arg.size]
  c = _family.multi30k_config(arg.size, epochs=epochs, batch_size=128, max_vocab_size=vocab)
  c.data.num_buckets = buckets
  c.model.update(
    cell='gru',
    num_layers=1,
    bidirectional=True,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    embed_dim=embed,
    hidden_dim=hidden,
    dropout_rate=dropout,
  )
  c.optim.update(optimizer='adam', learning_rate=2e-3, schedule='constant', grad_clip_norm=1.0)
  c.decode.update(beam_size=1, length_alpha=0.0, max_len=64)
  c.eval.update(metric='bleu', mode='max')
  c.num_seeds = seeds
  return c
