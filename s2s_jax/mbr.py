"""Minimum-Bayes-risk selection: among N candidate translations of one input, the one with the highest mean utility
against the others (Kumar & Byrne 2004; with samples as pseudo-references, Eikema & Aziz 2020).

The utilities are sacreBLEU's own sentence scores, computed on the detokenised text on the host: sentence BLEU
(`BLEU(effective_order=True)`, as `sacrebleu.sentence_bleu`) or chrF (`CHRF()`, as `sacrebleu.sentence_chrf`),
candidate i scored as the hypothesis against candidate j as the reference. Each candidate's reference statistics
are extracted once; a test checks the matrix against `sentence_score` pair by pair.
"""

import functools

import numpy as np
import sacrebleu

UTILITIES = ('bleu', 'chrf')
NONE_AND_UTILITIES = ('none',) + UTILITIES  # the choices of decode.mbr


@functools.cache
def _metric(utility: str):
  if utility == 'bleu':
    return sacrebleu.BLEU(effective_order=True)
  if utility == 'chrf':
    return sacrebleu.CHRF()
  raise ValueError(f'decode.mbr={utility!r}: the MBR utility is one of {UTILITIES}.')


def utility_matrix(texts: list[str], utility: str) -> np.ndarray:
  """[N, N] float64: entry (i, j) is the sentence `utility` (0-100) of texts[i] against the reference texts[j]."""
  metric = _metric(utility)
  refs = metric._cache_references([list(texts)])  # pylint: disable=protected-access  (each reference's n-grams once)
  out = np.empty((len(texts), len(texts)))
  for i, text in enumerate(texts):
    hyp = metric._preprocess_segment(text)  # pylint: disable=protected-access
    for j, ref in enumerate(refs):
      stats = metric._compute_segment_statistics(hyp, ref)  # pylint: disable=protected-access
      out[i, j] = metric._compute_score_from_stats(stats).score  # pylint: disable=protected-access
  return out


def expected_utility(texts: list[str], utility: str) -> np.ndarray:
  """[N]: each candidate's mean utility against the other N - 1 (its own entry left out; N = 1 gives 0)."""
  n = len(texts)
  if n < 2:
    return np.zeros((n,))
  matrix = utility_matrix(texts, utility)
  return (matrix.sum(axis=1) - np.diag(matrix)) / (n - 1)


def rank(texts: list[str], utility: str) -> tuple[list[int], np.ndarray]:
  """(candidate indices, best first, and their expected utilities): ties keep the candidates' order (for beam
  candidates, the beam's ranking)."""
  expected = expected_utility(texts, utility)
  order = sorted(range(len(texts)), key=lambda i: -expected[i])
  return order, expected[order]
