"""The PyTorch reference of `scripts/benchmark.py train --compare=torch`: the same encoder-decoder in torch.nn.LSTM.

Run by the benchmark in a subprocess (one per thread count, with OMP_WAIT_POLICY=PASSIVE set before torch starts);
prints one JSON line. The model mirrors this project's LSTM `luong` flow without input feeding: embeddings,
an L-layer unidirectional LSTM encoder whose final states initialise an L-layer LSTM decoder (bridge `copy`), the
`general` score h_t W a_s over the encoder outputs, h~ = tanh(W_c [c_t; h_t]) and a vocabulary projection; summed
cross-entropy over the target tokens divided by their count, global-norm clipping and Adam — one optimizer step per
timed step on a fixed synthetic batch (as the JAX side). Without input feeding the decoder runs as one fused
multi-step LSTM call, which is what a researcher would write in PyTorch.

  OMP_WAIT_POLICY=PASSIVE python scripts/torch_reference.py --threads=2 --batch_size=64 --src_len=30 \\
      --tgt_len=30 --vocab_size=8000 --embed_dim=256 --hidden_dim=512 --num_layers=2 --steps=20 --warmup=5
"""
import argparse
import json
import statistics
import time


def main():
  p = argparse.ArgumentParser()
  for name, default in (('threads', 1), ('batch_size', 64), ('src_len', 30), ('tgt_len', 30), ('vocab_size', 8000),
                        ('embed_dim', 256), ('hidden_dim', 512), ('num_layers', 2), ('steps', 20), ('warmup', 5),
                        ('repeats', 3)):
    p.add_argument(f'--{name}', type=int, default=default)
  p.add_argument('--grad_clip_norm', type=float, default=1.0)
  a = p.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(a.threads)
  torch.manual_seed(0)

  class Seq2Seq(nn.Module):

    def __init__(self):
      super().__init__()
      self.src_embed = nn.Embedding(a.vocab_size, a.embed_dim)
      self.tgt_embed = nn.Embedding(a.vocab_size, a.embed_dim)
      self.encoder = nn.LSTM(a.embed_dim, a.hidden_dim, a.num_layers, batch_first=True)
      self.decoder = nn.LSTM(a.embed_dim, a.hidden_dim, a.num_layers, batch_first=True)
      self.score = nn.Linear(a.hidden_dim, a.hidden_dim, bias=False)
      self.combine = nn.Linear(2 * a.hidden_dim, a.hidden_dim, bias=False)
      self.output = nn.Linear(a.hidden_dim, a.vocab_size)

    def forward(self, src, tgt_in):
      values, state = self.encoder(self.src_embed(src))
      h, _ = self.decoder(self.tgt_embed(tgt_in), state)
      scores = torch.bmm(self.score(h), values.transpose(1, 2))
      context = torch.bmm(torch.softmax(scores, dim=-1), values)
      attentional = torch.tanh(self.combine(torch.cat([context, h], dim=-1)))
      return self.output(attentional.reshape(-1, a.hidden_dim))

  model = Seq2Seq()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  g = torch.Generator().manual_seed(0)
  src = torch.randint(4, a.vocab_size, (a.batch_size, a.src_len), generator=g)
  tgt = torch.randint(4, a.vocab_size, (a.batch_size, a.tgt_len), generator=g)
  tgt_in = torch.cat([torch.full((a.batch_size, 1), 2), tgt[:, :-1]], dim=1)

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
  times = []
  for _ in range(a.repeats):
    start = time.perf_counter()
    for _ in range(a.steps):
      step()
    times.append((time.perf_counter() - start) / a.steps)
  step_s = statistics.median(times)
  n = 2048
  x, y = torch.randn(n, n), torch.randn(n, n)
  for _ in range(2):
    torch.mm(x, y)
  mm = []
  for _ in range(5):
    start = time.perf_counter()
    torch.mm(x, y)
    mm.append(time.perf_counter() - start)
  print(json.dumps({'threads': a.threads, 'torch_version': torch.__version__, 'step_s': step_s,
                    'target_tokens_per_s': a.batch_size * a.tgt_len / step_s,
                    'mm_gflops': 2 * n ** 3 / statistics.median(mm) / 1e9}))


if __name__ == '__main__':
  main()
