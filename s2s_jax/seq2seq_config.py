"""Seq2SeqConfig: the model's hyperparameters (the fields of `config.model`), their choices and the rules between them.

A module of its own, importing only the choices and checks it uses (`rnn`, `attention`, `cudnn_rnn`; none imports
it), so that the model's parts (`models.py`, `decoder.py`, `encoders.py`) can all type their `cfg`. One home per
rule: the numeric fields' ranges are `config_checks.RANGES`, rules across config sections are `config_checks`', the
valid attention combinations `attention.check_combination`; `validate` holds the other choices and the rules
between model fields, including those on the fields the data sets (vocabulary sizes, input kind and features).
"""

import dataclasses
from typing import Any

import flax

from s2s_jax import attention as attention_lib
from s2s_jax import cudnn_rnn
from s2s_jax import rnn

BRIDGES = ('copy', 'dense', 'zeros')
DTYPES = ('float32', 'bfloat16', 'float16')
# What a source step is: a token id, a feature frame (log-mel audio), or an image column (a CNN makes the grid).
INPUT_KINDS = ('tokens', 'frames', 'image')
FRAME_STRIDES = (1, 2, 4, 8)


@flax.struct.dataclass
class Seq2SeqConfig:
  """Model hyperparameters: the fields of `config.model` (CONVENTIONS §3)."""

  src_vocab_size: int = 0  # set from the data (tokens only)
  tgt_vocab_size: int = 0  # set from the data
  input_kind: str = 'tokens'  # tokens | frames | image: set from the data
  input_features: int = 0  # frames: features per frame (mel bins); image: pixels per column (height); from the data
  frame_stride: int = 1  # frames: 1, 2, 4 or 8 = time subsampling by that many stride-2 convolutions (width 3)
  pyramid: bool = False  # Listen, Attend and Spell: each encoder layer above the first halves time (concat pairs)
  specaug_masks: int = 2  # SpecAugment (training only): frequency bands and time bands, each this many
  specaug_freq_width: int = 0  # widest frequency band (mel bins); 0: no frequency masking
  specaug_time_width: int = 0  # widest time band (frames, at most 20% of the utterance); 0: no time masking
  cnn_layers: int = 2  # image: 3x3 convolution + ReLU + 2x2 max-pool blocks
  cnn_features: int = 32  # image: channels of every block
  image_channels: int = 1  # image: colour channels (input_features = height x channels); set from the data
  cell: str = 'lstm'  # rnn | gru | lstm
  num_layers: int = 1  # encoder and decoder layers
  bidirectional: bool = False  # encoder only
  bridge: str = 'copy'  # copy | dense | zeros: how the encoder's final states initialise the decoder
  attention: str = 'luong'  # none_init | none_concat | bahdanau | luong
  attention_score: str = 'general'  # additive | dot | general | concat | location | scaled_dot
  input_feeding: bool = False  # luong flow: feed h~_{t-1} into step t
  context_to_output: bool = False  # none_concat: the output layer also sees the context
  embed_to_output: bool = False  # the output layer also sees the previous target embedding
  pointer_generator: bool = False  # See et al. 2017: mix the vocabulary softmax with copying source ids (shared vocab)
  coverage: bool = False  # See et al. 2017: the summed past attention joins the additive / concat score
  embed_dim: int = 64
  hidden_dim: int = 128  # decoder units (and encoder units per direction unless encoder_hidden_dim is set)
  encoder_hidden_dim: int = 0  # units per encoder direction; 0: hidden_dim, or hidden_dim // 2 when bidirectional
  attention_dim: int = 0  # additive / concat scorer size; 0: hidden_dim
  max_src_len: int = 0  # padded source length; the location score needs it (set from data.max_src_len)
  dropout_rate: float = 0.0  # on embeddings, between layers, before the output layer
  variational_dropout: bool = False  # one mask per sequence, shared over time
  tie_embeddings: bool = False  # target embedding = output matrix (through a projection to embed_dim)
  recurrent_init: str = 'orthogonal'  # orthogonal (recurrent) + lecun (input) | uniform (all weights U(-s, s))
  init_scale: float = 0.1  # s of the uniform initialisation
  dtype: str = 'float32'  # compute dtype; parameters stay float32
  remat: bool = False  # recompute the recurrences' forward in the backward pass: less memory for long sequences
  # scan | cudnn | auto: the encoder's LSTM layers through cuDNN (CUDA GPUs, lstm, float32; the decoder stays
  # scanned); auto: cuDNN where the backend and model allow it, else the scan (cudnn_rnn.py, docs/gpu.md)
  rnn_impl: str = 'auto'

  @property
  def num_directions(self) -> int:
    return 2 if self.bidirectional else 1

  @property
  def encoder_units(self) -> int:
    if self.encoder_hidden_dim:
      return self.encoder_hidden_dim
    return self.hidden_dim // self.num_directions

  def validate(self) -> None:
    """Raises ValueError naming the field and what is allowed for every invalid choice or combination of fields."""
    _check_choices(self, cell=rnn.CELLS, bridge=BRIDGES)
    attention_lib.check_combination(self.attention, self.attention_score, self.input_feeding)
    _check_choices(
      self,
      recurrent_init=rnn.RECURRENT_INITS,
      dtype=DTYPES,
      input_kind=INPUT_KINDS,
      frame_stride=FRAME_STRIDES,
      rnn_impl=cudnn_rnn.IMPLS,
    )
    cudnn_rnn.check(self.rnn_impl, self.cell, self.dtype)
    positive = ('src_vocab_size',) if self.input_kind == 'tokens' else ('input_features',)
    for name in positive + ('tgt_vocab_size', 'num_layers', 'embed_dim', 'hidden_dim', 'cnn_layers', 'cnn_features'):
      if getattr(self, name) <= 0:
        raise ValueError(f'model.{name} must be positive, got {getattr(self, name)}.')
    for name in ('specaug_masks', 'specaug_freq_width', 'specaug_time_width'):
      if getattr(self, name) < 0:
        raise ValueError(f'model.{name} must be >= 0, got {getattr(self, name)}.')
    if self.input_kind != 'frames' and (self.frame_stride > 1 or self.specaug_freq_width or self.specaug_time_width):
      raise ValueError(
        'model.frame_stride and model.specaug_* apply to audio frames only; model.input_kind='
        f'{self.input_kind!r} (set from the data).'
      )
    if self.input_kind == 'image' and self.input_features % self.image_channels:
      raise ValueError(
        f'model.input_features={self.input_features} (image height x channels) must be a multiple '
        f'of model.image_channels={self.image_channels}.'
      )
    if self.pointer_generator and self.input_kind != 'tokens':
      raise ValueError(f"model.pointer_generator copies source tokens; this dataset's source is {self.input_kind}.")
    if self.bridge == 'copy' and self.encoder_units * self.num_directions != self.hidden_dim:
      raise ValueError(
        f'model.bridge=copy needs encoder units x directions == hidden_dim '
        f'({self.encoder_units} x {self.num_directions} != {self.hidden_dim}); use bridge=dense or '
        f'change model.encoder_hidden_dim.'
      )
    if self.attention == 'none_init' and self.bridge == 'zeros':
      raise ValueError(
        'model.attention=none_init with model.bridge=zeros gives the decoder no information about '
        'the source; use bridge=copy or dense.'
      )
    if (self.pointer_generator or self.coverage) and self.attention in attention_lib.NO_ATTENTION:
      raise ValueError(
        f'model.pointer_generator and model.coverage need attention weights; model.attention='
        f'{self.attention!r} has none (use bahdanau or luong).'
      )
    if self.coverage and self.attention_score not in ('additive', 'concat'):
      raise ValueError(
        f'model.coverage feeds the coverage vector into the additive / concat score; '
        f'model.attention_score={self.attention_score!r} has no place for it.'
      )
    if self.context_to_output and self.attention != 'none_concat':
      raise ValueError('model.context_to_output applies only to model.attention=none_concat.')
    if (
      self.attention_score == 'location' and self.attention not in attention_lib.NO_ATTENTION and self.max_src_len <= 0
    ):
      raise ValueError('model.attention_score=location needs model.max_src_len > 0 (set from data.max_src_len).')

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> 'Seq2SeqConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(d) - known):
      raise ValueError(f'Unknown model field(s) {unknown}; valid fields: {sorted(known)}.')
    return cls(**d)


def _check_choices(cfg: Seq2SeqConfig, **allowed) -> None:
  for name, choices in allowed.items():
    if getattr(cfg, name) not in choices:
      raise ValueError(f'model.{name}={getattr(cfg, name)!r} is not one of {choices}.')
