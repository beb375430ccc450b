"""Connected spoken digits (FSDD recordings joined into 1-7 digit utterances) -> digit words, Listen-Attend-Spell
style: 40 log-mel bins per 10 ms frame (per-utterance normalised, computed on the host), SpecAugment in training,
two stride-2 convolutions (time / 4), a 2-layer pyramidal bidirectional GRU (time / 2 again), a GRU decoder with
Bahdanau (additive) attention over the 80 ms memory steps, a word vocabulary (the ten digit words), beam 4.

Splits (CONVENTIONS §4): train, validation (held-out recordings of the training speakers), test_speaker (speaker
theo, never heard in training) and test_random (the official test recordings, indices 0-4); WER and CER on both
test splits.
  python -m s2s_jax.main --config=experiments/speech/fsdd.py --workdir=/tmp/fsdd
  python -m s2s_jax.evaluate --workdir=/tmp/fsdd --split=test_speaker
  ls /path/to/*.wav | python -m s2s_jax.translate --workdir=/tmp/fsdd --attention_dir=/tmp/fsdd_att
Measured: README.
"""

import ml_collections

from s2s_jax import config_lib

# embed, hidden (decoder; encoder hidden / 2 per direction), train utterances, eval utterances, steps
_SIZES = {
  'tiny': (16, 32, 48, 16, 20),
  'small': (64, 128, 3_000, 300, 2_000),
  'base': (128, 256, 20_000, 1_000, 20_000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, num_train, num_eval, steps = _SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name='fsdd',
    tokenizer='word',
    task_max_len=7,
    num_train_examples=num_train,
    num_eval_examples=num_eval,
    num_mel_bins=40,
    max_src_len=600,
    max_tgt_len=10,
    src_len_policy='truncate',
    tgt_len_policy='filter',
    batch_size=32,
    eval_batch_size=100,
    num_buckets=0,
    test_splits='test_speaker,test_random',
  )
  c.model.update(
    cell='gru',
    num_layers=2,
    bidirectional=True,
    pyramid=True,
    frame_stride=4,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
    dropout_rate=0.2,
    specaug_masks=2,
    specaug_freq_width=8,
    specaug_time_width=20,
  )
  c.optim.update(optimizer='adam', learning_rate=1e-3, schedule='cosine', warmup_steps=200, grad_clip_norm=1.0)
  c.decode.update(beam_size=4, length_alpha=0.0, max_len=10, batch_size=100)
  c.eval.update(metric='wer', mode='min', scores='wer,exact_match', num_decode_examples=num_eval)
  c.update(num_train_steps=steps, log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=500)
  if arg.size == 'tiny':
    c.data.update(max_src_len=300, num_buckets=2)
    c.model.update(num_layers=1, pyramid=False, specaug_time_width=5)
    config_lib.shrink_cadence_to_tiny(c)
    c.data.eval_batch_size = 16
    c.num_train_steps = steps
  return c
