"""Decoding on one trained model: beam 1/3/5/10/25 x length penalty 0/0.6/1.0 (Multi30k De->En, the Luong
`general` model with input feeding of experiments/multi30k/ablation.py, one seed).

  python scripts/sweep.py --sweep=experiments/sweeps/decoding.py:size=small --root=/tmp/decoding
  python scripts/report.py --root=/tmp/decoding
sweep.py trains the single point, then evaluates the test split once per EVALUATIONS entry
(eval_beam<B>_alpha<A>.json); report.py tabulates them. Measured: README.
"""

from s2s_jax import sweep_lib

CONFIG = 'experiments/multi30k/ablation.py'
EVALUATIONS = [{'beam_size': b, 'length_alpha': a} for b in (1, 3, 5, 10, 25) for a in (0.0, 0.6, 1.0)]


def get_sweep(arg: str | None = None) -> list[dict]:
  del arg
  return sweep_lib.points(
    {'model.attention': 'luong', 'model.attention_score': 'general', 'model.input_feeding': True, 'num_seeds': 1}
  )
