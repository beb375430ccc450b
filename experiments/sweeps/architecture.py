"""Architecture, one factor at a time from the Bahdanau-attention model of experiments/multi30k/ablation.py:
cell type (GRU, LSTM, simple RNN), depth (1 or 2 layers), uni- vs bidirectional encoder, reversed source.

  python scripts/sweep.py --sweep=experiments/sweeps/architecture.py:size=small --root=/tmp/architecture
  python scripts/report.py --root=/tmp/architecture --baseline=cell=gru
Measured: README.
"""

from s2s_jax import sweep_lib

CONFIG = 'experiments/multi30k/ablation.py'


def get_sweep(arg: str | None = None) -> list[dict]:
  del arg
  base = {'model.cell': 'gru', 'model.num_layers': 1, 'model.bidirectional': True, 'data.reverse_source': False}
  variants = [
    {},
    {'model.cell': 'lstm'},
    {'model.cell': 'rnn'},
    {'model.num_layers': 2},
    {'model.bidirectional': False},
    {'model.bidirectional': False, 'data.reverse_source': True},
  ]
  return sweep_lib.points(*({**base, **v} for v in variants))
