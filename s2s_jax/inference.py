"""Decoding a trained run: load a workdir, and batch, compile and run beam search over encoded inputs.

`Decoder` always decodes batches of one fixed shape [batch_size, src_len] (short batches are filled with empty
rows), so a sentence gets exactly the same output whichever batch it is in, and each shape compiles once; sampling
draws each input's samples from a key of its content, not of its position.
"""

from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import json
import os
from typing import Any
import zlib

import jax
import ml_collections
import numpy as np

from s2s_jax import checkpointing
from s2s_jax import config_checks
from s2s_jax import config_lib
from s2s_jax import decode
from s2s_jax import encoders
from s2s_jax import mbr
from s2s_jax import models
from s2s_jax import parallel
from s2s_jax import steps
from s2s_jax import workdir as workdir_lib
from s2s_jax.data import EOS_ID
from s2s_jax.data import SPECIAL_TOKENS
from s2s_jax.data import frontend as frontend_lib
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
  frontend: frontend_lib.Frontend  # the source side (vocab.src.json): a text vocabulary, an audio or image frontend
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
  """Config, frontend and target vocabulary, model and parameters of `workdir` (`checkpoint`: see
  checkpointing.restore_params). Raises ValueError with a one-line message when the workdir or the checkpoint is not
  there."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ValueError(f'--workdir={workdir}: {path} does not exist; give a directory written by s2s_jax.main.')
  with open(path, encoding='utf-8') as f:
    config = config_lib.from_saved(json.load(f))
  config_checks.validate(config)
  frontend = frontend_lib.load(os.path.join(workdir, 'vocab.src.json'))
  tgt_vocab = vocab_lib.load(os.path.join(workdir, 'vocab.tgt.json'))
  workdir_lib.check_vocabs(workdir, config, frontend, tgt_vocab)
  params, step = checkpointing.restore_params(workdir, checkpoint)
  return Run(
    workdir,
    config,
    models.Seq2Seq(config_lib.model_config(config)),
    params,
    step,
    frontend,
    tgt_vocab,
    inputs_lib.for_config(config, frontend),
  )


def load_all(workdirs: Sequence[str], checkpoint: str = 'best') -> list[Run]:
  """Several runs to decode as an ensemble. Their target vocabularies must be the same (by hash): the search
  averages their log-probabilities over one vocabulary. Each member reads its input its own way (see
  `ensemble_inputs`), so frontends and input settings may differ."""
  runs = [load(w, checkpoint) for w in workdirs]
  for run in runs[1:]:
    a, b = runs[0].tgt_vocab, run.tgt_vocab
    if a.sha256() != b.sha256():
      raise ValueError(
        f'An ensemble needs one target vocabulary: {run.workdir}/vocab.tgt.json differs from '
        f'{runs[0].workdir}/vocab.tgt.json (sha256 {b.sha256()[:12]}... vs {a.sha256()[:12]}...); '
        'ensemble runs trained on the same data with the same target vocabulary settings.'
      )
  return runs


def input_settings(run: Run) -> dict[str, Any]:
  """What decides how a run encodes an input line: its frontend (by hash and settings), the
  data fields that shape a source (reverse_source, max_src_len) and its model's input kind."""
  return {
    'frontend': f'{run.frontend.sha256()[:12]} {run.frontend.settings()}',
    'data.reverse_source': bool(run.config.data.reverse_source),
    'data.max_src_len': run.config.data.max_src_len,
    'model.input_kind': run.config.model.input_kind,
  }


class EnsembleInputs:
  """The input kind of an ensemble whose members read their inputs differently: an example is a tuple holding each
  member's own encoding of the line (`Decoder` pads each member's into its own batch, to its own length)."""

  def __init__(self, kinds: Sequence[inputs_lib.InputKind]):
    self.kinds = tuple(kinds)
    self.max_len = tuple(k.max_len for k in self.kinds)

  def encode(self, line: str) -> tuple[tuple[np.ndarray, ...], bool]:
    encoded = [k.encode(line) for k in self.kinds]
    return tuple(x for x, _ in encoded), any(t for _, t in encoded)

  def labels(self, example) -> list[str]:
    return self.kinds[0].labels(example[0])  # the attention shown is the first member's


def ensemble_inputs(runs: Sequence[Run]) -> inputs_lib.InputKind | EnsembleInputs:
  """How `runs` read an input line: the first run's input kind when every member reads it alike, else each
  member's own (`EnsembleInputs`), so a data.reverse_source=true member sees its source reversed whatever the
  order of the members."""
  if all(input_settings(r) == input_settings(runs[0]) for r in runs[1:]):
    return runs[0].inputs
  if len({r.frontend.source_kind for r in runs}) > 1:
    raise ValueError(
      'The members of an ensemble must read the same kind of input line (text, or the path of an audio or image '
      f'file); they differ in {"; ".join(differing_inputs(runs))}.'
    )
  return EnsembleInputs([r.inputs for r in runs])


def differing_inputs(runs: Sequence[Run]) -> list[str]:
  """The input settings in which the members of an ensemble differ, e.g. ['data.reverse_source: False, True']."""
  settings = [input_settings(r) for r in runs]
  return [
    f'{key}: {", ".join(str(s[key]) for s in settings)}'
    for key in settings[0]
    if any(s[key] != settings[0][key] for s in settings)
  ]


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


def first_member(example):
  """The first member's encoding of an ensemble example (a tuple, see `EnsembleInputs`), else the example."""
  return example[0] if isinstance(example, tuple) else example


def _example_key(example) -> int:
  """The crc32 of an example's bytes (every member's, for an ensemble example)."""
  parts = example if isinstance(example, tuple) else (example,)
  return zlib.crc32(b''.join(np.ascontiguousarray(x).tobytes() for x in parts))


class Decoder:
  """Beam search (or sampling, or MBR selection among sampled or beam candidates) over encoded examples in
  fixed-shape batches, on all local devices; `model` may be a tuple of models decoded as an ensemble (then the
  params passed to a call are a tuple too)."""

  def __init__(
    self,
    model: models.Seq2Seq | tuple[models.Seq2Seq, ...],
    options: decode.DecodeOptions,
    tgt_vocab: vocab_lib.Vocab,
    *,
    src_len: int | tuple[int, ...],
    batch_size: int,
  ):
    devices = jax.local_device_count()
    self.batch_size = -(-batch_size // devices) * devices  # a multiple of the device count
    self.src_len, self.options, self.tgt_vocab = src_len, options, tgt_vocab
    # With MBR the search draws the candidates and the host picks among them (s2s_jax/mbr.py).
    self._predict = steps.make_predict_fn(model, decode.candidate_options(options))

  def __call__(
    self,
    params,
    examples: Sequence[Any],
    memory_len: Callable[[Any], int] = len,
    seed: int = 0,
    keys: Sequence[int] | None = None,
  ) -> list[Hypotheses]:
    """Decodes `examples` with replicated `params`, padded into batches by `inputs_lib.collate`;
    `memory_len(example)` is how many encoder memory steps (attention columns) an example has. An example may be
    a tuple of the members' own encodings of one input (`EnsembleInputs`; then `src_len` is a tuple too, and each
    member reads its own batch).

    Examples are decoded in order of length, so each batch holds inputs of similar length and its search stops
    at a similar output length; the results come back in the order given. A sentence's output does not depend on
    its batch: rows are decoded independently, and sampling draws the samples of example i from
    fold_in(PRNGKey(seed), keys[i]), where `keys` identify the inputs' content (translate and evaluate pass
    `inputs.line_key` of each input line; by default the crc32 of the example's bytes). The same input and seed give the
    same samples at any position, in any batch and at any batch size."""
    keys = [_example_key(x) for x in examples] if keys is None else list(keys)
    if len(keys) != len(examples):
      raise ValueError(f'{len(keys)} keys for {len(examples)} examples.')
    order = sorted(range(len(examples)), key=lambda i: len(first_member(examples[i])))
    out = [None] * len(examples)
    for start in range(0, len(order), self.batch_size):
      rows = order[start : start + self.batch_size]
      chunk = [examples[i] for i in rows]
      if isinstance(self.src_len, tuple):  # an ensemble's members, each reading its own encoding
        batch = tuple(inputs_lib.collate([x[m] for x in chunk], self.batch_size, n) for m, n in enumerate(self.src_len))
      else:
        batch = inputs_lib.collate(chunk, self.batch_size, self.src_len)
      row_keys = np.zeros((self.batch_size,), np.uint32)  # the filler rows' keys do not matter
      row_keys[: len(rows)] = [keys[i] for i in rows]
      rngs = inputs_lib.row_rngs(seed, row_keys)
      result = jax.device_get(self._predict(params, parallel.shard_batch(batch), parallel.shard_batch(rngs)))
      seqs, scores, *attn = [x.reshape((-1,) + x.shape[2:])[: len(chunk)] for x in result]
      for j, (i, example) in enumerate(zip(rows, chunk)):
        out[i] = self._hypotheses(seqs[j], scores[j], attn[0][j, :, :, : memory_len(example)] if attn else None)
    if self.options.mbr != 'none':
      out = [self._mbr(h) for h in out]
    return out

  def _mbr(self, hyps: Hypotheses) -> Hypotheses:
    """The candidates in order of their expected utility against the others, scored by it (0-100): the MBR
    choice first. Empty slots of a beam's n-best (score -inf) stay last, scored -inf."""
    real = [k for k, s in enumerate(hyps.scores) if s > -np.inf]
    order, expected = mbr.rank([hyps.texts[k] for k in real], self.options.mbr)
    keep = [real[k] for k in order] + [k for k in range(len(hyps.texts)) if k not in real]
    scores = [float(e) for e in expected] + [float('-inf')] * (len(keep) - len(order))
    attention = [hyps.attention[k] for k in keep] if hyps.attention is not None else None
    return Hypotheses([hyps.texts[k] for k in keep], scores, [hyps.tokens[k] for k in keep], attention)

  def _hypotheses(self, seqs_KxT: np.ndarray, scores_K: np.ndarray, attn_KxTxS: np.ndarray | None) -> Hypotheses:
    texts, tokens, attention = [], [], []
    for k, seq in enumerate(seqs_KxT):
      n = int(np.argmax(seq == EOS_ID)) + 1 if (seq == EOS_ID).any() else int((seq != 0).sum())
      texts.append(self.tgt_vocab.decode(seq))
      tokens.append([SPECIAL_TOKENS[i] if i < len(SPECIAL_TOKENS) else self.tgt_vocab.tokens[i] for i in seq[:n]])
      if attn_KxTxS is not None:
        attention.append(attn_KxTxS[k, :n])
    return Hypotheses(texts, [float(s) for s in scores_K], tokens, attention if attn_KxTxS is not None else None)
