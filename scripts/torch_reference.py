"""The PyTorch peers of `scripts/benchmark.py train --compare=torch`: the same encoder-decoders, written in eager
PyTorch the way the tutorials and OpenNMT-py write them.

Run by the benchmark in a subprocess (one per thread count, with OMP_WAIT_POLICY=PASSIVE set before torch starts);
prints one JSON line. One optimizer step per timed step on a fixed synthetic batch (as the JAX side): summed
cross-entropy over the target tokens divided by their count, global-norm clipping, Adam. --device=cuda runs on a GPU
(nn.LSTM / nn.GRU through cuDNN; scripts/benchmark_gpu.py), timed after torch.cuda.synchronize(), with the peak of
torch.cuda.max_memory_allocated() in the JSON line. Architectures (--arch):

  luong         (experiments/benchmarks/lstm512.py) L-layer LSTM encoder whose final states initialise an L-layer
                LSTM decoder, Luong `general` attention h_t W a_s, h~ = tanh(W_c [c_t; h_t]), vocabulary
                projection. Without input feeding the decoder is one fused multi-step nn.LSTM call.
  sutskever     (multi30k/seq2seq_lstm.py, tutorial 1) L-layer LSTM encoder and decoder, the encoder's final
                states initialise the decoder; the decoder is stepped in Python, one nn.LSTM call per target token.
  cho           (multi30k/gru_context.py, tutorial 2) GRU encoder; the context (its final state) joins every
                decoder step's input and the output layer ([embedding; state; context]); stepped in Python.
  bahdanau      (multi30k/bahdanau_bigru.py, tutorial 3) bidirectional GRU encoder, tanh bridge, additive attention
                over the encoder outputs from the previous decoder state, GRU input [embedding; context], output layer
                on [state; context; embedding]; stepped in Python. The memory side of the additive score is
                projected once per batch (the tutorial projects [state; memory] at every step: the same function,
                more work), so this peer is faster than the tutorial's own code.
  input_feeding (multi30k/strong.py, OpenNMT-py's default RNN decoder) L-layer bidirectional LSTM encoder, dense tanh
                bridge, L-layer LSTM decoder stepped in Python (one LSTMCell per layer) with input
                [embedding; h~_{t-1}], Luong `general` attention and h~ = tanh(W_c [c_t; h_t]).
Dropout is applied where the JAX model applies it (embeddings, between layers, before the output layer), at the
given rate.

  OMP_WAIT_POLICY=PASSIVE python scripts/torch_reference.py --arch=bahdanau --threads=2 --batch_size=128 \\
      --src_len=28 --tgt_len=28 --vocab_size=6000 --embed_dim=256 --hidden_dim=512 --encoder_hidden_dim=512 \\
      --num_layers=1 --dropout=0.5 --steps=10
"""

import argparse
import json
import statistics
import time

ARCHS = ('luong', 'sutskever', 'cho', 'bahdanau', 'input_feeding')


def _models(a):
  """The torch.nn.Module of --arch (imports torch only when run)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  class Base(nn.Module):
    def __init__(self):
      super().__init__()
      self.src_embed = nn.Embedding(a.vocab_size, a.embed_dim)
      self.tgt_embed = nn.Embedding(a.vocab_size, a.embed_dim)
      self.drop = nn.Dropout(a.dropout)

  class Luong(Base):
    def __init__(self):
      super().__init__()
      self.encoder = nn.LSTM(a.embed_dim, a.hidden_dim, a.num_layers, batch_first=True, dropout=a.dropout)
      self.decoder = nn.LSTM(a.embed_dim, a.hidden_dim, a.num_layers, batch_first=True, dropout=a.dropout)
      self.score = nn.Linear(a.hidden_dim, a.hidden_dim, bias=False)
      self.combine = nn.Linear(2 * a.hidden_dim, a.hidden_dim, bias=False)
      self.output = nn.Linear(a.hidden_dim, a.vocab_size)

    def forward(self, src, tgt_in):
      values, state = self.encoder(self.drop(self.src_embed(src)))
      h, _ = self.decoder(self.drop(self.tgt_embed(tgt_in)), state)
      scores = torch.bmm(self.score(h), values.transpose(1, 2))
      context = torch.bmm(torch.softmax(scores, dim=-1), values)
      attentional = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))
      return self.output(self.drop(attentional)).reshape(-1, a.vocab_size)

  class Sutskever(Base):
    def __init__(self):
      super().__init__()
      self.encoder = nn.LSTM(a.embed_dim, a.hidden_dim, a.num_layers, batch_first=True, dropout=a.dropout)
      self.decoder = nn.LSTM(a.embed_dim, a.hidden_dim, a.num_layers, batch_first=True, dropout=a.dropout)
      self.output = nn.Linear(a.hidden_dim, a.vocab_size)

    def forward(self, src, tgt_in):
      _, state = self.encoder(self.drop(self.src_embed(src)))
      logits = []
      for t in range(tgt_in.shape[1]):  # one token at a time, as the tutorial's decoder
        out, state = self.decoder(self.drop(self.tgt_embed(tgt_in[:, t : t + 1])), state)
        logits.append(self.output(self.drop(out[:, 0])))
      return torch.stack(logits, 1).reshape(-1, a.vocab_size)

  class Cho(Base):
    def __init__(self):
      super().__init__()
      self.encoder = nn.GRU(a.embed_dim, a.hidden_dim, batch_first=True)
      self.decoder = nn.GRU(a.embed_dim + a.hidden_dim, a.hidden_dim, batch_first=True)
      self.output = nn.Linear(a.embed_dim + 2 * a.hidden_dim, a.vocab_size)

    def forward(self, src, tgt_in):
      _, context = self.encoder(self.drop(self.src_embed(src)))  # [1, B, H]
      hidden, logits = context, []
      for t in range(tgt_in.shape[1]):
        emb = self.drop(self.tgt_embed(tgt_in[:, t]))
        out, hidden = self.decoder(torch.cat([emb, context[0]], -1)[:, None], hidden)
        logits.append(self.output(self.drop(torch.cat([emb, out[:, 0], context[0]], -1))))
      return torch.stack(logits, 1).reshape(-1, a.vocab_size)

  class Bahdanau(Base):
    def __init__(self):
      super().__init__()
      enc, att = a.encoder_hidden_dim, a.attention_dim
      self.encoder = nn.GRU(a.embed_dim, enc, batch_first=True, bidirectional=True)
      self.bridge = nn.Linear(2 * enc, a.hidden_dim)
      self.att_query = nn.Linear(a.hidden_dim, att)
      self.att_key = nn.Linear(2 * enc, att, bias=False)
      self.att_v = nn.Linear(att, 1, bias=False)
      self.decoder = nn.GRU(a.embed_dim + 2 * enc, a.hidden_dim, batch_first=True)
      self.output = nn.Linear(a.hidden_dim + 2 * enc + a.embed_dim, a.vocab_size)

    def forward(self, src, tgt_in):
      values, final = self.encoder(self.drop(self.src_embed(src)))  # [B, S, 2E]
      hidden = torch.tanh(self.bridge(torch.cat([final[0], final[1]], -1)))[None]
      keys = self.att_key(values)
      logits = []
      for t in range(tgt_in.shape[1]):
        emb = self.drop(self.tgt_embed(tgt_in[:, t]))
        energy = self.att_v(torch.tanh(keys + self.att_query(hidden[0])[:, None]))[..., 0]
        context = torch.bmm(torch.softmax(energy, -1)[:, None], values)[:, 0]
        out, hidden = self.decoder(torch.cat([emb, context], -1)[:, None], hidden)
        logits.append(self.output(self.drop(torch.cat([out[:, 0], context, emb], -1))))
      return torch.stack(logits, 1).reshape(-1, a.vocab_size)

  class InputFeeding(Base):
    def __init__(self):
      super().__init__()
      enc, h = a.encoder_hidden_dim, a.hidden_dim
      self.encoder = nn.LSTM(a.embed_dim, enc, a.num_layers, batch_first=True, bidirectional=True, dropout=a.dropout)
      self.bridge = nn.ModuleList(nn.Linear(2 * enc, h) for _ in range(2 * a.num_layers))
      self.cells = nn.ModuleList(nn.LSTMCell((a.embed_dim + h) if i == 0 else h, h) for i in range(a.num_layers))
      self.score = nn.Linear(2 * enc, h, bias=False)
      self.combine = nn.Linear(2 * enc + h, h, bias=False)
      self.output = nn.Linear(h, a.vocab_size)

    def forward(self, src, tgt_in):
      values, (hs, cs) = self.encoder(self.drop(self.src_embed(src)))
      hs, cs = (x.view(a.num_layers, 2, *x.shape[1:]) for x in (hs, cs))
      state = [
        (
          torch.tanh(self.bridge[2 * i](torch.cat([hs[i, 0], hs[i, 1]], -1))),
          torch.tanh(self.bridge[2 * i + 1](torch.cat([cs[i, 0], cs[i, 1]], -1))),
        )
        for i in range(a.num_layers)
      ]
      keys = self.score(values)  # [B, S, H]
      feed = values.new_zeros(src.shape[0], a.hidden_dim)
      logits = []
      for t in range(tgt_in.shape[1]):
        x = torch.cat([self.drop(self.tgt_embed(tgt_in[:, t])), feed], -1)
        for i, cell in enumerate(self.cells):
          state[i] = cell(x if i == 0 else self.drop(x), state[i])
          x = state[i][0]
        weights = torch.softmax(torch.bmm(keys, x[:, :, None])[..., 0], -1)
        context = torch.bmm(weights[:, None], values)[:, 0]
        feed = torch.tanh(self.combine(torch.cat([context, x], -1)))
        logits.append(self.output(self.drop(feed)))
      return torch.stack(logits, 1).reshape(-1, a.vocab_size)

  return {'luong': Luong, 'sutskever': Sutskever, 'cho': Cho, 'bahdanau': Bahdanau, 'input_feeding': InputFeeding}[
    a.arch
  ]()


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', choices=ARCHS, default='luong')
  for name, default in (
    ('threads', 1),
    ('batch_size', 64),
    ('src_len', 30),
    ('tgt_len', 30),
    ('vocab_size', 8000),
    ('embed_dim', 256),
    ('hidden_dim', 512),
    ('encoder_hidden_dim', 0),
    ('attention_dim', 0),
    ('num_layers', 2),
    ('steps', 20),
    ('warmup', 5),
    ('repeats', 3),
  ):
    p.add_argument(f'--{name}', type=int, default=default)
  p.add_argument('--grad_clip_norm', type=float, default=1.0)
  p.add_argument('--dropout', type=float, default=0.0)
  p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu', help='cuda: nn.LSTM / nn.GRU run on cuDNN')
  a = p.parse_args()
  a.encoder_hidden_dim = a.encoder_hidden_dim or a.hidden_dim
  a.attention_dim = a.attention_dim or a.hidden_dim
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  if a.device == 'cuda' and not torch.cuda.is_available():
    p.error('--device=cuda: torch.cuda.is_available() is False (a CPU-only torch build, or no GPU); use --device=cpu')
  sync = torch.cuda.synchronize if a.device == 'cuda' else lambda: None  # CUDA kernels run asynchronously
  torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  model = _models(a).to(a.device)
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  g = torch.Generator().manual_seed(0)
  src = torch.randint(4, a.vocab_size, (a.batch_size, a.src_len), generator=g)
  tgt = torch.randint(4, a.vocab_size, (a.batch_size, a.tgt_len), generator=g)
  tgt_in = torch.cat([torch.full((a.batch_size, 1), 2), tgt[:, :-1]], dim=1)
  src, tgt, tgt_in = (x.to(a.device) for x in (src, tgt, tgt_in))

  def step():
    opt.zero_grad(set_to_none=True)
    logits = model(src, tgt_in)
    loss = nn.functional.cross_entropy(logits, tgt.reshape(-1), reduction='sum') / tgt.numel()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip_norm)
    opt.step()
    return loss

  for _ in range(a.warmup):
    step()
  sync()
  times = []
  for _ in range(a.repeats):
    start = time.perf_counter()
    for _ in range(a.steps):
      step()
    sync()
    times.append((time.perf_counter() - start) / a.steps)
  step_s = statistics.median(times)
  cuda = {}
  if a.device == 'cuda':  # the training's peak, read before the matmul below allocates its inputs
    cuda = {
      'peak_bytes': torch.cuda.max_memory_allocated(),
      'device_name': torch.cuda.get_device_name(),
      'cudnn_version': torch.backends.cudnn.version(),
    }
  n = 2048
  x, y = torch.randn(n, n, device=a.device), torch.randn(n, n, device=a.device)
  for _ in range(2):
    torch.mm(x, y)
  sync()
  mm = []
  for _ in range(5):
    start = time.perf_counter()
    torch.mm(x, y)
    sync()
    mm.append(time.perf_counter() - start)
  print(
    json.dumps(
      {
        'arch': a.arch,
        'threads': a.threads,
        'torch_version': torch.__version__,
        'step_s': step_s,
        'target_tokens_per_s': a.batch_size * a.tgt_len / step_s,
        'mm_gflops': 2 * n**3 / statistics.median(mm) / 1e9,
        'device': a.device,
        **cuda,
      }
    )
  )


if __name__ == '__main__':
  main()
