"""Multi30k De->En `strong`, fine-tuned at the sequence level: minimum expected risk (Shen et al. 2016; Edunov et al.
2018) over the 4-best of a beam searched inside every step plus the reference, cost 1 - BLEU+1 on the subword ids,
sharpness 1, mixed with the token-level loss at weight 0.3 (s2s_jax/sequence_loss.py). It starts from a trained
`strong` run's best checkpoint with a fresh Adam at a constant 1e-4 and keeps the checkpoint with the best
validation BLEU:

  python -m s2s_jax.main --config=experiments/multi30k/strong.py --workdir=/tmp/m30k_strong
  python -m s2s_jax.main --config=experiments/multi30k/strong_risk.py --workdir=/tmp/m30k_strong_risk \\
      --init_from=/tmp/m30k_strong
Measured: docs/results.md (sequence-level training and MBR decoding).
"""

import ml_collections

from s2s_jax import config_lib

_strong = config_lib.import_beside(__file__, 'strong.py')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = _strong.get_config(arg)
  c.optim.update(
    sequence_loss='risk',
    sequence_candidates=4,
    sequence_source='beam',
    sequence_cost='bleu',
    sequence_sharpness=1.0,
    sequence_token_weight=0.3,
    learning_rate=1e-4,
    schedule='constant',
    warmup_steps=0,
  )
  c.update(num_train_epochs=0.0, num_train_steps=300, eval_every_steps=100, checkpoint_every_steps=100)
  if config_lib.parse_arg(arg, size='small').size == 'tiny':
    c.update(num_train_steps=20, eval_every_steps=20, checkpoint_every_steps=20)
  return c
