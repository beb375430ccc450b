"""Teacher forcing against scheduled sampling (Bengio et al. 2015) on Multi30k De->En: the Bahdanau model of
experiments/multi30k/ablation.py (3 vmapped seeds per variant) trained with
  - teacher forcing at every step (ratio 1, this project's default),
  - a constant ratio of 0.5 (the PyTorch tutorials' `teacher_forcing_ratio`),
  - Bengio et al.'s inverse sigmoid decay k / (k + exp(step / k)) with k = 100: 0.99 at step 0, 0.52 at the last
    step of size=small (452 steps), so the late updates see the model's own prefixes about half the time.

  python scripts/sweep.py --sweep=experiments/sweeps/scheduled_sampling.py --root=/tmp/scheduled_sampling
  python scripts/report.py --root=/tmp/scheduled_sampling --baseline=teacher_forcing=constant,teacher_forcing_ratio=1.0
The model's own token is its argmax (optim.scheduled_sampling_sample=False), chosen per token inside the compiled
step. Measured: README (scheduled sampling).
"""

from s2s_jax import sweep_lib

CONFIG = 'experiments/multi30k/ablation.py'


def get_sweep(arg: str | None = None) -> list[dict]:
  del arg
  return sweep_lib.points(
    {'optim.teacher_forcing': 'constant', 'optim.teacher_forcing_ratio': 1.0},
    {'optim.teacher_forcing': 'constant', 'optim.teacher_forcing_ratio': 0.5},
    {'optim.teacher_forcing': 'inverse_sigmoid', 'optim.teacher_forcing_ratio': 1.0, 'optim.teacher_forcing_k': 100.0},
  )
