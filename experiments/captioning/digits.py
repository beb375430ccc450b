"""Image captioning on generated canvases of 1-5 handwritten digits (scikit-learn's digit images) -> the digit
words, Show-Attend-and-Tell style: a small CNN (2 blocks of 3x3 convolution + 2x2 max-pooling) gives a 6 x 25 grid
of feature vectors, read column by column by a bidirectional GRU; a GRU decoder with Bahdanau (additive) attention
over the 150 grid cells; beam 4. Test canvases use digit images never seen in training (CONVENTIONS §4).
The doubly stochastic attention regulariser (Xu et al. 2015) is `--config.optim.doubly_stochastic_weight`.
  python -m s2s_jax.main --config=experiments/captioning/digits.py --workdir=/tmp/digits
  ls /path/to/*.png | python -m s2s_jax.translate --workdir=/tmp/digits --attention_dir=/tmp/digits_att
Measured: README (exact match and BLEU-4 on the test canvases).
"""

import ml_collections

from s2s_jax import config_lib

# embed, hidden (decoder; encoder hidden / 2 per direction), CNN channels, train canvases, eval canvases, steps
_SIZES = {
  'tiny': (16, 32, 8, 64, 32, 20),
  'small': (64, 128, 32, 10_000, 500, 1_500),
  'base': (128, 256, 64, 50_000, 1_000, 20_000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_lib.parse_arg(arg, size='small')
  embed_dim, hidden_dim, channels, num_train, num_eval, steps = _SIZES[arg.size]
  c = config_lib.base_config()
  c.data.update(
    name='digits_captions',
    tokenizer='word',
    task_max_len=5,
    image_height=24,
    image_width=100,
    image_channels=1,
    num_train_examples=num_train,
    num_eval_examples=num_eval,
    max_src_len=100,
    max_tgt_len=8,
    batch_size=64,
    eval_batch_size=100,
  )
  c.model.update(
    cell='gru',
    num_layers=1,
    bidirectional=True,
    bridge='dense',
    attention='bahdanau',
    attention_score='additive',
    cnn_layers=2,
    cnn_features=channels,
    embed_dim=embed_dim,
    hidden_dim=hidden_dim,
    dropout_rate=0.1,
  )
  c.optim.update(optimizer='adam', learning_rate=1e-3, schedule='cosine', warmup_steps=100, grad_clip_norm=1.0)
  c.decode.update(beam_size=4, length_alpha=0.0, max_len=8, batch_size=100)
  c.eval.update(metric='exact_match', mode='max', scores='bleu,exact_match', num_decode_examples=num_eval)
  c.update(num_train_steps=steps, log_every_steps=50, eval_every_steps=500, checkpoint_every_steps=500)
  if arg.size == 'tiny':
    config_lib.shrink_cadence_to_tiny(c)
    c.num_train_steps = steps
  return c
