"""Deterministic (source, target) string pairs for the built-in generated tasks.

Tasks (CONVENTIONS §4): `dates` (the default task), `copy`, `reverse`, `sort`,
`addition`; splits `train`, `validation`, `test`. Same arguments, same pairs, on
every machine and Python version: randomness comes only from
`random.Random(int).random()`, the one stream Python promises to keep, seeded
from a SHA-256 of `(task, split, seed)` (never the salted `hash()` of a str).

`dates` (a human-written date -> ISO `YYYY-MM-DD`) is generated in dates.py.

`copy`, `reverse`, `sort`: the source is space-separated symbols written as
decimal numbers `0`..`num_symbols-1`, its length uniform in [min_len, max_len],
each symbol uniform; the target is the sequence copied, reversed, or sorted
numerically ascending. `addition`: the source is `a+b`, each operand with a
uniform digit count in 1..max_digits, then a uniform value with that many digits
(no leading zeros; `0` counts as one digit); the target is the decimal sum.
  * Splits: each possible source string belongs to exactly one split, by a
    stable hash of (task, source): `_EVAL_FRACTION` of all sources to test, as
    many to validation, the rest to train. A split draws from the task's
    distribution and keeps only its own sources. So train never meets a
    validation or test source whatever sizes, seeds or lengths each call uses
    (a train call cannot know how many eval examples other calls asked for, so
    "skip the first N eval sources" would not be enough).
  * Validation and test sources are distinct within their split. When the split
    cannot supply num_examples of them (e.g. max_len=1, num_symbols=2),
    `generate` raises ValueError; the attempts are bounded.
"""

from collections.abc import Callable
from collections.abc import Iterator
import functools
import hashlib
import random

from s2s_jax.data import dates
from s2s_jax.data import stable_random

SPLITS = ('train', 'validation', 'test')
TASKS = ('dates', 'copy', 'reverse', 'sort', 'addition')

_EVAL_FRACTION = 0.1  # share of sequence/addition sources owned by each of
# test and validation
_MAX_REJECTIONS = 100_000  # unusable draws in a row before giving up


def _split_of(task: str, source: str) -> str:
  """The one split that owns `source` (a stable hash; no seeds, no lengths)."""
  digest = hashlib.sha256(f'{task}\x1f{source}'.encode()).digest()
  u = int.from_bytes(digest[:8], 'big') / 2**64
  if u < _EVAL_FRACTION:
    return 'test'
  return 'validation' if u < 2 * _EVAL_FRACTION else 'train'


def _draw_sequence(rng: random.Random, min_len: int, max_len: int, num_symbols: int) -> str:
  length = min_len + stable_random.below(rng, max_len - min_len + 1)
  return ' '.join(str(stable_random.below(rng, num_symbols)) for _ in range(length))


def _draw_operand(rng: random.Random, max_digits: int) -> int:
  digits = 1 + stable_random.below(rng, max_digits)
  low = 0 if digits == 1 else 10 ** (digits - 1)
  return low + stable_random.below(rng, 10**digits - low)


def _draw_addition(rng: random.Random, max_digits: int) -> str:
  a = _draw_operand(rng, max_digits)
  return f'{a}+{_draw_operand(rng, max_digits)}'


_TARGETS: dict[str, Callable[[str], str]] = {
  'copy': lambda s: s,
  'reverse': lambda s: ' '.join(reversed(s.split())),
  'sort': lambda s: ' '.join(sorted(s.split(), key=int)),
  'addition': lambda s: str(sum(int(x) for x in s.split('+'))),
}


def _generate_from_space(
  task: str, split: str, num_examples: int, seed: int, draw: Callable[[random.Random], str], hint: str
) -> Iterator[tuple[str, str]]:
  """Yields pairs whose sources the split owns; eval sources never repeat."""
  rng = stable_random.make_rng(task, split, seed)
  seen, rejections, count = set(), 0, 0
  while count < num_examples:
    source = draw(rng)
    if _split_of(task, source) != split or (split != 'train' and source in seen):
      rejections += 1
      if rejections > _MAX_REJECTIONS:
        raise ValueError(
          f'{task}/{split}: found only {count} of num_examples='
          f'{num_examples} usable sources ({_MAX_REJECTIONS} unusable '
          f'draws in a row); the space of sources is too small: {hint}.'
        )
      continue
    rejections = 0
    if split != 'train':
      seen.add(source)
    count += 1
    yield source, _TARGETS[task](source)


def _check_at_least(name: str, value: int, minimum: int, what: str) -> None:
  if value < minimum:
    raise ValueError(f'{name}={value} is invalid: set {name} >= {minimum} ({what}).')


def _space_size(task: str, min_len: int, max_len: int, num_symbols: int, max_digits: int, cap: int) -> int:
  """Number of distinct sources of a task, or some value > cap."""
  if task == 'addition':
    return (10**max_digits) ** 2
  total = 0
  for length in range(min_len, max_len + 1):
    total += num_symbols**length
    if total > cap:
      break
  return total


def generate(
  task: str,
  split: str,
  *,
  num_examples: int,
  seed: int = 0,
  min_len: int = 1,
  max_len: int = 10,
  num_symbols: int = 20,
  max_digits: int = 3,
) -> Iterator[tuple[str, str]]:
  """Yields num_examples (source, target) pairs of one split.

  Same args -> same pairs, every time, on every machine.

  Args:
    task: one of TASKS.
    split: one of SPLITS.
    num_examples: how many pairs to yield (>= 1).
    seed: varies which examples are drawn, never which split owns a date or
      a source.
    min_len: shortest sequence (copy/reverse/sort).
    max_len: longest sequence (copy/reverse/sort).
    num_symbols: symbols `0`..`num_symbols-1` (copy/reverse/sort).
    max_digits: most digits of each operand (addition).

  Returns:
    An iterator over (source, target) string pairs; see the module docstring.

  Raises:
    ValueError: at call time, for an unknown task or split (the message lists
      the allowed values), an invalid number (it says what to change), or an
      eval split asking for more distinct sources than exist; while iterating,
      when the split's share of a small space runs out of distinct sources.
  """
  if task not in TASKS:
    raise ValueError(f'Unknown task {task!r}; allowed: {", ".join(TASKS)}.')
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; allowed: {", ".join(SPLITS)}.')
  _check_at_least('num_examples', num_examples, 1, 'pairs to yield')
  if task == 'dates':  # ignores the sequence and addition knobs
    return dates.generate(split, num_examples, seed)
  if task == 'addition':
    _check_at_least('max_digits', max_digits, 1, 'digits of each operand')
    draw = functools.partial(_draw_addition, max_digits=max_digits)
    hint = 'increase max_digits or lower num_examples'
  else:
    _check_at_least('min_len', min_len, 1, 'the shortest sequence')
    if min_len > max_len:
      raise ValueError(f'min_len={min_len} > max_len={max_len}: set max_len >= min_len.')
    _check_at_least('num_symbols', num_symbols, 2, 'the vocabulary size')
    draw = functools.partial(_draw_sequence, min_len=min_len, max_len=max_len, num_symbols=num_symbols)
    hint = 'increase max_len or num_symbols, or lower num_examples'
  space = _space_size(task, min_len, max_len, num_symbols, max_digits, cap=num_examples)
  if split != 'train' and space < num_examples:
    raise ValueError(
      f'{task}/{split}: num_examples={num_examples} distinct sources asked '
      f'for, but only {space} exist in all splits together; the space of '
      f'sources is too small: {hint}.'
    )
  return _generate_from_space(task, split, num_examples, seed, draw, hint)
