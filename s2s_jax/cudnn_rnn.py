"""The encoder's LSTM layers through cuDNN (`model.rnn_impl`), this project's parameters packed into its layout.

  scan   every recurrence is the project's scan (rnn.lstm_scan and its kin)
  cudnn  each encoder LSTM layer, both directions, is one call of jax.experimental.rnn.lstm (cuDNN's fused kernels:
         CUDA GPUs, cell=lstm, dtype=float32); the decoders stay scanned (attention and input feeding need the step)
  auto   cudnn where the backend is a CUDA GPU and the model allows it (lstm, float32, no remat), else the scan

The parameter tree stays the project's own (RecurrentCell's `input` kernel [D, 4H] and bias [4H], `recurrent`
kernel [H, 4H], gates i, f, g, o), so checkpoints move between the paths unchanged: `pack_weights` builds cuDNN's
flat weight vector from them inside the step, and gradients flow back through the packing. cuDNN's layout (see
jax.experimental.rnn's docstring) is, per direction (forward first), W_ih [4H, D] then W_hh [4H, H], then per
direction b_ih [4H] then b_hh [4H]; its gates are i, f, g, o too. The project's LSTM has one bias, so b_hh is 0.

Between layers the stack's own logic runs as with the scan (dropout, pyramid), and the padding semantics are the
scan's: outputs are zero at padded steps, final states are read at each sequence's last real step (the backward
direction ends at its first step) and a row without steps keeps the initial (zero) state.

A layer function has jax.experimental.rnn.lstm's signature: `cudnn_lstm` runs on the GPU, and `reference_lstm`
runs the same packed weights through jax.experimental.rnn.lstm_ref anywhere, which is how the CPU tests check
the packing and the padding against the scan (tests/rnn_impl_test.py).
"""

from collections.abc import Callable
from collections.abc import Sequence
import functools

import jax
from jax.experimental import rnn as jax_rnn
import jax.numpy as jnp

IMPLS = ('scan', 'cudnn', 'auto')

LstmFn = Callable[..., tuple[jax.Array, jax.Array, jax.Array]]


def check(rnn_impl: str, cell: str, dtype: str) -> None:
  """Raises ValueError when model.rnn_impl=cudnn cannot run this cell or dtype (any backend: a config check)."""
  if rnn_impl == 'cudnn' and (cell != 'lstm' or dtype != 'float32'):
    raise ValueError(
      f'model.rnn_impl=cudnn runs LSTM layers in float32 only; got model.cell={cell!r}, model.dtype={dtype!r}. '
      "Use model.rnn_impl='auto' (cuDNN where it applies, the scan elsewhere) or 'scan'."
    )


def on_cuda() -> bool:
  """Whether the default backend is a CUDA GPU, the only place cuDNN's LSTM lowers."""
  if jax.default_backend() != 'gpu':
    return False
  return 'cuda' in jax.devices()[0].client.platform_version.lower()


def encoder_lstm(cfg, cuda: bool | None = None) -> LstmFn | None:
  """The layer function the encoder's LSTM layers run through for `cfg` (seq2seq_config.Seq2SeqConfig): `cudnn_lstm`, or
  None for the scan. rnn_impl=cudnn off a CUDA GPU raises ValueError naming auto and scan. `cuda`: whether the
  backend is a CUDA GPU (default: `on_cuda()`)."""
  check(cfg.rnn_impl, cfg.cell, cfg.dtype)
  if cfg.rnn_impl == 'scan':
    return None
  cuda = on_cuda() if cuda is None else cuda
  if cfg.rnn_impl == 'cudnn':
    if not cuda:
      raise ValueError(
        f'model.rnn_impl=cudnn needs a CUDA GPU (cuDNN); the backend here is {jax.default_backend()!r}. '
        "Use model.rnn_impl='auto' (cuDNN on a CUDA GPU, the scan elsewhere) or 'scan'."
      )
    return cudnn_lstm
  return cudnn_lstm if cuda and cfg.cell == 'lstm' and cfg.dtype == 'float32' and not cfg.remat else None


def pack_weights(directions: Sequence[dict]) -> jax.Array:
  """cuDNN's flat weight vector of one layer (num_layers=1) from its directions' RecurrentCell parameters, forward
  first: {'input': {'kernel': [D, 4H], 'bias': [4H]}, 'recurrent': {'kernel': [H, 4H]}} each."""
  matrices, biases = [], []
  for p in directions:
    matrices += [p['input']['kernel'].T.ravel(), p['recurrent']['kernel'].T.ravel()]
    biases += [p['input']['bias'], jnp.zeros_like(p['input']['bias'])]
  return jnp.concatenate(matrices + biases)


def cell_params(cell, input_dim: int) -> dict:
  """An LSTM RecurrentCell's parameters (created at initialisation exactly as its scan creates them)."""
  if cell.is_initializing():
    cell.input_proj(jnp.zeros((1, input_dim), cell.dtype))
    cell.recurrent_kernel()
  return cell.variables['params']


def run_layer(lstm_fn: LstmFn, cells: Sequence, x_TxBxD: jax.Array, mask_BxT: jax.Array):
  """One encoder layer (`cells`: its forward and, when bidirectional, backward RecurrentCell) through `lstm_fn`
  over a padded, time-major batch: (final carry (c, h) [B, H * directions] each, outputs [T, B, H * directions]),
  as rnn.RNNStack's scanned layers give them (directions concatenated on the feature axis, forward first)."""
  if cells[0].kind != 'lstm':
    raise ValueError(f'cuDNN runs LSTM layers only; this layer is a {cells[0].kind!r} cell.')
  lengths = mask_BxT.sum(axis=1).astype(jnp.int32)
  input_dim, batch, hidden = x_TxBxD.shape[-1], x_TxBxD.shape[1], cells[0].hidden_dim
  weights = pack_weights([cell_params(cell, input_dim) for cell in cells])
  zeros = jnp.zeros((len(cells), batch, hidden), x_TxBxD.dtype)
  # A row without steps runs one (padding) step, as cuDNN needs lengths >= 1; its results are dropped below.
  y_BxTxK, h_n, c_n = lstm_fn(
    x_TxBxD.swapaxes(0, 1), zeros, zeros, weights, jnp.maximum(lengths, 1), input_dim, hidden, 1, 0.0, len(cells) > 1
  )
  real = (lengths > 0)[:, None]
  final = tuple(jnp.where(real, jnp.concatenate(list(s), axis=-1), 0.0) for s in (c_n, h_n))
  return final, y_BxTxK.swapaxes(0, 1) * mask_BxT.T[..., None].astype(y_BxTxK.dtype)


def reference_lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional):
  """jax.experimental.rnn.lstm's contract on any backend: the packed weights unpacked (unpack_lstm_weights) and run
  through jax.experimental.rnn.lstm_ref, the reference of cuDNN's LSTM."""
  w_ih, w_hh, b_ih, b_hh = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
  return jax_rnn.lstm_ref(
    x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional
  )


def looped_under_vmap(fwd: Callable, bwd: Callable) -> LstmFn:
  """A layer function from a forward `fwd(x, h_0, c_0, weights, seq_lengths, *static) -> (outputs, residuals)` and a
  backward `bwd(*static, residuals, grads) -> grads`, which under jax.vmap (config.num_seeds > 1 vmaps the train
  step) runs each mapped slice in turn: cuDNN's primitives have no batching rule."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
  def lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional):
    return lstm_fwd(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional)[0]

  def lstm_fwd(x, h_0, c_0, weights, seq_lengths, *static):
    looped = jax.custom_batching.sequential_vmap(lambda *args: fwd(*args, *static))
    return looped(x, h_0, c_0, weights, seq_lengths)

  def lstm_bwd(*args):
    *static, residuals, grads = args
    dx, dh_0, dc_0, dweights, _ = jax.custom_batching.sequential_vmap(lambda r, g: bwd(*static, r, g))(residuals, grads)
    return dx, dh_0, dc_0, dweights, None

  lstm.defvjp(lstm_fwd, lstm_bwd)
  return lstm


# jax.experimental.rnn.lstm (cuDNN), through its own forward and backward, at JAX's default matmul precision.
cudnn_lstm = looped_under_vmap(
  lambda *args: jax_rnn.lstm_fwd(*args, precision=None), lambda *args: jax_rnn.lstm_bwd(*args[:5], None, *args[5:])
)
