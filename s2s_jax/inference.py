"""Decoding a trained run: load a workdir, and batch, compile and run beam search over encoded inputs.

`Decoder` always decodes batches of one fixed shape [batch_size, src_len] (short batches are filled with empty
rows), so a sentence gets exactly the same output whichever batch it is in, and each shape compiles once.
"""

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from s2s_jax import checkpointing
from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import encoders
from s2s_jax import models
from s2s_jax import steps
from s2s_jax import workdir as workdir_lib
from s2s_jax.data import EOS_ID, SPECIAL_TOKENS
from s2s_jax.data import inputs as inputs_lib
from s2s_jax.data import vocab as vocab_lib


@dataclasses.dataclass
class Run:
  """A trained run read back from its workdir."""

  workdir: str
  config: ml_collections.ConfigDict
  model: models.Seq2Seq
  params: Any
  step: int
  src_vocab: vocab_lib.Vocab
  tgt_vocab: vocab_lib.Vocab
  inputs: inputs_lib.InputKind

  @property
  def source(self) -> encoders.SourceInput:
    """The model's source input (unbound): the geometry of its memory."""
    return encoders.for_config(self.model.cfg)

  def memory_labels(self, example) -> list[str]:
    """One label per memory step of an encoded example (the attention's columns)."""
    return self.source.memory_labels(self.inputs.labels(example))


def load(workdir: str, checkpoint: str = 'best') -> Run:
  """Config, vocabularies, model and parameters of `workdir` ('best', 'latest' or a step number)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: --workdir must be a directory written by s2s_jax.main.')
  with open(path, encoding='utf-8') as f:
    config = config_lib.from_saved(json.load(f))
  config_checks.validate(config)
  src_vocab, tgt_vocab = (vocab_lib.load(os.path.join(workdir, f'vocab.{side}.json')) for side in ('src', 'tgt'))
  workdir_lib.check_vocabs(workdir, config, src_vocab, tgt_vocab)
  params, step = checkpointing.restore_params(workdir, checkpoint)
  return Run(
    workdir,
    config,
    models.Seq2Seq(config_lib.model_config(config)),
    params,
    step,
    src_vocab,
    tgt_vocab,
    inputs_lib.for_config(config, src_vocab),
  )


def load_all(workdirs: Sequence[str], checkpoint: str = 'best') -> list[Run]:
  """Several runs to decode as an ensemble; their source and target vocabularies must be the same (by hash)."""
  runs = [load(w, checkpoint) for w in workdirs]
  for run in runs[1:]:
    for side in ('src_vocab', 'tgt_vocab'):
      a, b = getattr(runs[0], side), getattr(run, side)
      if a.sha256() != b.sha256():
        raise ValueError(
          f'An ensemble needs one vocabulary per side: {run.workdir}/vocab.{side[:3]}.json differs from '
          f'{runs[0].workdir}/vocab.{side[:3]}.json (sha256 {b.sha256()[:12]}... vs {a.sha256()[:12]}...); '
          'ensemble runs trained on the same data with the same vocabulary settings.'
        )
  return runs


def ensemble(runs: Sequence[Run]) -> tuple:
  """(model, params) for Decoder and predict_step: one run's, or tuples of every run's (an ensemble)."""
  if len(runs) == 1:
    return runs[0].model, runs[0].params
  return tuple(r.model for r in runs), tuple(r.params for r in runs)


@dataclasses.dataclass
class Hypotheses:
  """The n-best list of one input, best first."""

  texts: list[str]
  scores: list[float]
  tokens: list[list[str]]  # target tokens of each hypothesis, EOS included when it was produced
  attention: list[np.ndarray] | None  # per hypothesis [len(tokens), source steps]


class Decoder:
  """Beam search (or sampling) over encoded examples in fixed-shape batches, on all local devices; `model` may be a
  tuple of models decoded as an ensemble (then the params passed to a call are a tuple too)."""

  def __init__(
    self,
    model: models.Seq2Seq | tuple[models.Seq2Seq, ...],
    options: decode.DecodeOptions,
    tgt_vocab: vocab_lib.Vocab,
    *,
    src_len: int,
    batch_size: int,
  ):
    devices = jax.local_device_count()
    self.batch_size = -(-batch_size // devices) * devices  # a multiple of the device count
    self.src_len, self.options, self.tgt_vocab = src_len, options, tgt_vocab
    self._predict = steps.make_predict_fn(model, options)

  def __call__(
    self,
    params,
    examples: Sequence[np.ndarray],
    collate: Callable[..., dict[str, np.ndarray]],
    memory_len: Callable[[np.ndarray], int] = len,
    seed: int = 0,
  ) -> list[Hypotheses]:
    """Decodes `examples` with replicated `params`; `collate(chunk, batch_size, length)` pads a batch and
    `memory_len(example)` is how many encoder memory steps (attention columns) an example has.

    Examples are decoded in order of length, so each batch holds inputs of similar length and its search stops
    at a similar output length; the results come back in the order given (a sentence's output does not depend on
    its batch). Sampling draws from `seed` (folded with the batch number): the same inputs and seed give the same
    samples."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    out = [None] * len(examples)
    for start in range(0, len(order), self.batch_size):
      rows = order[start : start + self.batch_size]
      chunk = [examples[i] for i in rows]
      batch = collate(chunk, self.batch_size, self.src_len)
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), start // self.batch_size)
      result = jax.device_get(self._predict(params, steps.shard_batch(batch), rng))
      seqs, scores, *attn = [x.reshape((-1,) + x.shape[2:])[: len(chunk)] for x in result]
      for j, (i, example) in enumerate(zip(rows, chunk)):
        out[i] = self._hypotheses(seqs[j], scores[j], attn[0][j, :, :, : memory_len(example)] if attn else None)
    return out

  def _hypotheses(self, seqs_KxT: np.ndarray, scores_K: np.ndarray, attn_KxTxS: np.ndarray | None) -> Hypotheses:
    texts, tokens, attention = [], [], []
    for k, seq in enumerate(seqs_KxT):
      n = int(np.argmax(seq == EOS_ID)) + 1 if (seq == EOS_ID).any() else int((seq != 0).sum())
      texts.append(self.tgt_vocab.decode(seq))
      tokens.append([SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.tgt_vocab.tokens[i] for i in seq[:n]])
      if attn_KxTxS is not None:
        attention.append(attn_KxTxS[k, :n])
    return Hypotheses(texts, [float(s) for s in scores_K], tokens, attention if attn_KxTxS is not None else None)
