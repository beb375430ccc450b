"""Multi30k De->En, bentrevett/pytorch-seq2seq tutorial 1 (Sutskever et al. 2014): the context only initialises
the decoder. 2-layer LSTM encoder and decoder of 512 units, embeddings of 256, dropout 0.5, U(-0.08, 0.08)
initialisation, Adam 1e-3, clipping 1, batch 128, 10 epochs, best epoch by validation loss, greedy decoding of at
most 25 tokens; word vocabularies (min count 2) of lowercased Moses tokens (the tutorial uses spaCy tokens).

  python -m s2s_jax.main --config=experiments/multi30k/seq2seq_lstm.py --workdir=/tmp/m30k_lstm
  (:tf=0.5 trains with the tutorial's teacher-forcing ratio of 0.5, scheduled sampling at a constant ratio;
  the default is teacher forcing at every step.)
Published (tutorial): test PPL 43.8, BLEU 13.8 (tokenised, lowercased). Measured: README table.
`size=base` is the same as `size=small` (the default): both are the tutorial's published model and schedule,
the real size of this experiment (no tutorial publishes a larger one); it trains in under 70 minutes on a 2-core
CPU (README), and a GPU runs the same config.
"""

import ml_collections

from s2s_jax import config_lib

_family = config_lib.import_beside(__file__, '_family.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small', tf=1.0)
  c = _family.multi30k_config(arg.size, epochs=10, batch_size=128)
  c.model.update(
    cell='lstm',
    num_layers=2,
    bidirectional=False,
    bridge='copy',
    attention='none_init',
    embed_dim=256,
    hidden_dim=512,
    dropout_rate=0.5,
    recurrent_init='uniform',
    init_scale=0.08,
  )
  c.optim.update(optimizer='adam', learning_rate=1e-3, schedule='constant', grad_clip_norm=1.0)
  c.decode.update(beam_size=1, length_alpha=0.0, max_len=25)
  if arg.size == 'tiny':
    c.model.update(embed_dim=16, hidden_dim=32)
  c.optim.teacher_forcing_ratio = arg.tf  # :tf=0.5 is the tutorial's teacher-forcing ratio
  return c
