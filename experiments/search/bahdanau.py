"""Search the Bahdanau Multi30k model (experiments/multi30k/ablation.py's Bahdanau variant at size=small): the
learning rate, dropout and attention size, by validation BLEU.

  python scripts/tune.py --space=experiments/search/bahdanau.py --root=/tmp/tune_bahdanau --trials=8
  python scripts/tune.py --space=experiments/search/bahdanau.py:lr_min=1.5e-3,lr_max=6e-3 --root=... --trials=8
"""

from s2s_jax import config_lib

CONFIG = 'experiments/multi30k/ablation.py'
CONFIG_ARG = 'size=small'
METRIC = 'eval/bleu'
DIRECTION = 'maximize'
# Trial 0: the hand-set values of ablation.py (attention_dim 0 there means the decoder size, 128 at size=small).
START = {'optim.learning_rate': 2e-3, 'model.dropout_rate': 0.2, 'model.attention_dim': 128}


def suggest(trial, arg: str | None = None) -> dict:
  # `:lr_min=A,lr_max=B` moves the learning-rate range (size= is the config's arg, passed here when no other is given)
  arg = config_lib.parse_arg(arg, lr_min=3e-4, lr_max=3e-3, size='small')
  return {
    'num_seeds': 1,  # one run per trial (the ablation's default trains 3 vmapped seeds)
    'model.attention': 'bahdanau',
    'model.attention_score': 'additive',
    'optim.learning_rate': trial.suggest_float('optim.learning_rate', arg.lr_min, arg.lr_max, log=True),
    'model.dropout_rate': trial.suggest_float('model.dropout_rate', 0.0, 0.5),
    'model.attention_dim': trial.suggest_categorical('model.attention_dim', [64, 128, 256]),
  }
