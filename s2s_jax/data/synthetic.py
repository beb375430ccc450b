"""Deterministic (source, target) string pairs for the built-in generated tasks.

Tasks (CONVENTIONS §4): `dates` (the default task), `copy`, `reverse`, `sort`,
`addition`; splits `train`, `validation`, `test`. Same arguments, same pairs, on
every machine and Python version: randomness comes only from
`random.Random(int).random()`, the one stream Python promises to keep, seeded
from a SHA-256 of `(task, split, seed)` (never the salted `hash()` of a str).

`dates`: a human-written date -> ISO `YYYY-MM-DD`, 1900-01-01 .. 2099-12-31.
  * Formats: `DATE_FORMATS`, 46 templates in English and French, with lower /
    Title / UPPER variants. Each is a pure function of the date, so every source
    equals `f.render(date)` for some format `f`.
  * One numeric convention per separator, so no source is ambiguous:
      `/` with the year last is US month/day/year (`8/21/1998`, `08/21/98`);
          with a 4-digit year first it is year/month/day (`1998/08/21`).
          Day-first slashes (the French habit) are never generated.
      `.` is day.month.year (`21.8.1998`, `21.08.98`).
      `-` between numbers is ISO year-month-day (`1998-08-21`).
      Eight digits alone are `YYYYMMDD` (`19980821`).
    With a month name, a 4-digit number is the year, and the day always comes
    before a two-digit year (`21-Aug-98`, `Aug 21, '98`).
  * Two-digit years always mean 1950..2049 (`50` -> 1950, `49` -> 2049). A
    two-digit-year format is only chosen for a date in 1950..2049; other dates
    choose among the four-digit formats.
  * English ordinals: 1st 2nd 3rd 4th .. 11th 12th 13th .. 21st 22nd 23rd ..
    31st. French writes day 1 as `1er` and other days as plain numbers; French
    month names keep their accents (`février`, `août`, `décembre`). Weekday
    names are the date's real weekday in both languages.
  * Split pools, independent of `seed` so the splits are disjoint for every
    seed: all 73,049 dates are shuffled once with the constant
    `_DATE_POOL_SEED`; the first 5,000 are the test pool, the next 5,000 the
    validation pool, the other 63,049 the train pool. A split draws dates from
    its pool without replacement while the pool lasts, then with replacement,
    and a format uniformly among those allowed for the date.

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

from collections.abc import Callable, Iterator
import dataclasses
import datetime
import functools
import hashlib
import random

SPLITS = ('train', 'validation', 'test')
TASKS = ('dates', 'copy', 'reverse', 'sort', 'addition')

FIRST_DATE = datetime.date(1900, 1, 1)
LAST_DATE = datetime.date(2099, 12, 31)
TWO_DIGIT_YEARS = (1950, 2049)  # inclusive: `yy` >= 50 is 19yy, else 20yy
_DATE_POOL_SEED = 20240521  # constant: the split pools never depend on `seed`
# In this order from the start of the shuffled dates; train gets the rest.
_DATE_POOL_SIZES = {'test': 5_000, 'validation': 5_000}
_EVAL_FRACTION = 0.1  # share of sequence/addition sources owned by each of
# test and validation
_MAX_REJECTIONS = 100_000  # unusable draws in a row before giving up
_CHUNK = 2**32

_EN_MONTHS = (
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
)
_EN_MONTHS_AP = (
  'Jan.',
  'Feb.',
  'March',
  'April',
  'May',
  'June',
  'July',
  'Aug.',
  'Sept.',
  'Oct.',
  'Nov.',
  'Dec.',
)  # AP style
_EN_WEEKDAYS = ('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday')
_FR_MONTHS = (
  'janvier',
  'février',
  'mars',
  'avril',
  'mai',
  'juin',
  'juillet',
  'août',
  'septembre',
  'octobre',
  'novembre',
  'décembre',
)
_FR_MONTHS_ABBR = ('janv.', 'févr.', 'mars', 'avr.', 'mai', 'juin', 'juil.', 'août', 'sept.', 'oct.', 'nov.', 'déc.')
_FR_WEEKDAYS = ('lundi', 'mardi', 'mercredi', 'jeudi', 'vendredi', 'samedi', 'dimanche')


@dataclasses.dataclass(frozen=True)
class DateFormat:
  """One way of writing a date: a `str.format` template over `date_fields`.

  Attributes:
    template: e.g. '{Month} {d}, {yyyy}'.
    lang: 'en', 'fr' or 'num' (numbers only, language-neutral).
  """

  template: str
  lang: str

  @property
  def two_digit_year(self) -> bool:
    return '{yy}' in self.template

  def render(self, date: datetime.date) -> str:
    return self.template.format(**date_fields(date))


# Examples are for Friday 1998-08-21.
DATE_FORMATS = (
  # English, month first (US).
  DateFormat('{Month} {d}, {yyyy}', 'en'),  # August 21, 1998
  DateFormat('{month} {d} {yyyy}', 'en'),  # august 21 1998
  DateFormat('{MONTH} {d}, {yyyy}', 'en'),  # AUGUST 21, 1998
  DateFormat('{Mon} {d}, {yyyy}', 'en'),  # Aug 21, 1998
  # Aug. 21, 1998 (AP style: March..July spelled out, Sept.)
  DateFormat('{Mon_ap} {d}, {yyyy}', 'en'),
  DateFormat('{Month} {dth}, {yyyy}', 'en'),  # August 21st, 1998
  DateFormat("{Mon} {d}, '{yy}", 'en'),  # Aug 21, '98
  # Friday, August 21, 1998
  DateFormat('{Weekday}, {Month} {d}, {yyyy}', 'en'),
  DateFormat('{Weekday}, {Month} {dth} {yy}', 'en'),  # Friday, August 21st 98
  # Fri Aug 21 1998 (JavaScript's toDateString)
  DateFormat('{Wkd} {Mon} {dd} {yyyy}', 'en'),
  DateFormat('{WKD} {MON} {d}, {yyyy}', 'en'),  # FRI AUG 21, 1998
  DateFormat('{yyyy} {Month} {d}', 'en'),  # 1998 August 21
  # English, day first (British).
  DateFormat('{d} {Month} {yyyy}', 'en'),  # 21 August 1998
  DateFormat('{d} {Mon} {yyyy}', 'en'),  # 21 Aug 1998
  DateFormat('{d} {month} {yy}', 'en'),  # 21 august 98
  DateFormat('{dd} {MON} {yyyy}', 'en'),  # 21 AUG 1998 (military)
  DateFormat('{dth} {Month} {yyyy}', 'en'),  # 21st August 1998
  # the 21st of august, 1998
  DateFormat('the {dth} of {month}, {yyyy}', 'en'),
  DateFormat('The {dth} of {Month} {yyyy}', 'en'),  # The 21st of August 1998
  DateFormat('{Weekday} {d} {Month} {yyyy}', 'en'),  # Friday 21 August 1998
  # Friday the 21st of August, 1998
  DateFormat('{Weekday} the {dth} of {Month}, {yyyy}', 'en'),
  DateFormat('{wkd} {d} {mon} {yyyy}', 'en'),  # fri 21 aug 1998
  # Fri, 21 Aug 1998 (e-mail, RFC 2822)
  DateFormat('{Wkd}, {d} {Mon} {yyyy}', 'en'),
  DateFormat('{d}-{Mon}-{yy}', 'en'),  # 21-Aug-98
  DateFormat('{dd}-{MON}-{yyyy}', 'en'),  # 21-AUG-1998 (Oracle)
  # English numeric: slashes with the year last are ALWAYS month/day/year.
  DateFormat('{m}/{d}/{yyyy}', 'en'),  # 8/21/1998
  DateFormat('{mm}/{dd}/{yyyy}', 'en'),  # 08/21/1998
  DateFormat('{m}/{d}/{yy}', 'en'),  # 8/21/98
  DateFormat('{mm}/{dd}/{yy}', 'en'),  # 08/21/98
  # Language-neutral numeric.
  DateFormat('{yyyy}/{mm}/{dd}', 'num'),  # 1998/08/21 (year first: Y/M/D)
  DateFormat('{yyyy}-{mm}-{dd}', 'num'),  # 1998-08-21 (ISO, the identity)
  DateFormat('{yyyy}{mm}{dd}', 'num'),  # 19980821 (ISO basic)
  DateFormat('{d}.{m}.{yyyy}', 'num'),  # 21.8.1998 (dots: day.month.year)
  DateFormat('{dd}.{mm}.{yyyy}', 'num'),  # 21.08.1998
  DateFormat('{dd}.{mm}.{yy}', 'num'),  # 21.08.98
  # French: day first, `1er` for day 1, accented month names.
  DateFormat('{d_fr} {mois} {yyyy}', 'fr'),  # 21 août 1998
  DateFormat('{d_fr} {mois} {yy}', 'fr'),  # 21 août 98
  # 21 août 1998 (abbreviated: janv., févr., avr., juil., sept., ... déc.)
  DateFormat('{d_fr} {mois_abr} {yyyy}', 'fr'),
  DateFormat('{d_fr} {MOIS} {yyyy}', 'fr'),  # 21 AOÛT 1998
  DateFormat('le {d_fr} {mois} {yyyy}', 'fr'),  # le 21 août 1998
  DateFormat('Le {d_fr} {mois} {yyyy}', 'fr'),  # Le 21 août 1998
  DateFormat('{jour} {d_fr} {mois} {yyyy}', 'fr'),  # vendredi 21 août 1998
  DateFormat('{Jour} {d_fr} {Mois} {yyyy}', 'fr'),  # Vendredi 21 Août 1998
  # le vendredi 21 août 1998
  DateFormat('le {jour} {d_fr} {mois} {yyyy}', 'fr'),
  DateFormat('{jour} {d_fr} {mois_abr} {yy}', 'fr'),  # vendredi 21 août 98
  DateFormat('{JOUR} {d_fr} {MOIS} {yyyy}', 'fr'),  # VENDREDI 21 AOÛT 1998
)


def _en_ordinal(day: int) -> str:
  """1st 2nd 3rd 4th .. 11th 12th 13th .. 21st 22nd 23rd .. 31st."""
  suffixes = {1: 'st', 2: 'nd', 3: 'rd'}
  suffix = 'th' if 11 <= day % 100 <= 13 else suffixes.get(day % 10, 'th')
  return f'{day}{suffix}'


def date_fields(date: datetime.date) -> dict[str, str]:
  """Returns every field a `DateFormat.template` may use, for `date`."""
  month, weekday = _EN_MONTHS[date.month - 1], _EN_WEEKDAYS[date.weekday()]
  mois, jour = _FR_MONTHS[date.month - 1], _FR_WEEKDAYS[date.weekday()]
  return {
    'd': str(date.day),
    'dd': f'{date.day:02d}',
    'dth': _en_ordinal(date.day),
    'd_fr': '1er' if date.day == 1 else str(date.day),
    'm': str(date.month),
    'mm': f'{date.month:02d}',
    'yyyy': f'{date.year:04d}',
    'yy': f'{date.year % 100:02d}',
    'month': month.lower(),
    'Month': month,
    'MONTH': month.upper(),
    'mon': month[:3].lower(),
    'Mon': month[:3],
    'MON': month[:3].upper(),
    'Mon_ap': _EN_MONTHS_AP[date.month - 1],
    'weekday': weekday.lower(),
    'Weekday': weekday,
    'WEEKDAY': weekday.upper(),
    'wkd': weekday[:3].lower(),
    'Wkd': weekday[:3],
    'WKD': weekday[:3].upper(),
    'mois': mois,
    'Mois': mois[0].upper() + mois[1:],
    'MOIS': mois.upper(),
    'mois_abr': _FR_MONTHS_ABBR[date.month - 1],
    'jour': jour,
    'Jour': jour.capitalize(),
    'JOUR': jour.upper(),
  }


def _make_rng(*parts: object) -> random.Random:
  """A generator seeded stably (SHA-256, not the salted `hash()`)."""
  text = '\x1f'.join(map(str, parts))
  digest = hashlib.sha256(text.encode('utf-8')).digest()
  return random.Random(int.from_bytes(digest[:8], 'big'))


def _below(rng: random.Random, n: int) -> int:
  """Uniform int in [0, n) from `rng.random()` only (a stream Python keeps)."""
  if n <= _CHUNK:  # 53-bit floats: relative bias below 2**-21
    return int(rng.random() * n)
  num_chunks = (n.bit_length() + 31) // 32
  limit = _CHUNK**num_chunks // n * n
  while True:  # rejection keeps big ranges (many-digit operands) exact
    value = 0
    for _ in range(num_chunks):
      value = value * _CHUNK + int(rng.random() * _CHUNK)
    if value < limit:
      return value % n


def _date_pools() -> dict[str, list[int]]:
  """The fixed, disjoint date pools (proleptic ordinals) of each split."""
  ordinals = list(range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1))
  rng = random.Random(_DATE_POOL_SEED)
  for i in range(len(ordinals) - 1, 0, -1):  # Fisher-Yates, about 30 ms
    j = _below(rng, i + 1)
    ordinals[i], ordinals[j] = ordinals[j], ordinals[i]
  test_end = _DATE_POOL_SIZES['test']
  validation_end = test_end + _DATE_POOL_SIZES['validation']
  return {
    'test': ordinals[:test_end],
    'validation': ordinals[test_end:validation_end],
    'train': ordinals[validation_end:],
  }


def _generate_dates(split: str, num_examples: int, seed: int) -> Iterator[tuple[str, str]]:
  """Yields (human date, ISO date) pairs from the split's pool."""
  pool = _date_pools()[split]
  rng = _make_rng('dates', split, seed)
  four_digit = [f for f in DATE_FORMATS if not f.two_digit_year]
  for i in range(num_examples):
    if i < len(pool):  # partial Fisher-Yates: no replacement while it lasts
      j = i + _below(rng, len(pool) - i)
      pool[i], pool[j] = pool[j], pool[i]
      ordinal = pool[i]
    else:
      ordinal = pool[_below(rng, len(pool))]
    date = datetime.date.fromordinal(ordinal)
    in_window = TWO_DIGIT_YEARS[0] <= date.year <= TWO_DIGIT_YEARS[1]
    formats = DATE_FORMATS if in_window else four_digit
    yield formats[_below(rng, len(formats))].render(date), date.isoformat()


def _split_of(task: str, source: str) -> str:
  """The one split that owns `source` (a stable hash; no seeds, no lengths)."""
  digest = hashlib.sha256(f'{task}\x1f{source}'.encode('utf-8')).digest()
  u = int.from_bytes(digest[:8], 'big') / 2**64
  if u < _EVAL_FRACTION:
    return 'test'
  return 'validation' if u < 2 * _EVAL_FRACTION else 'train'


def _draw_sequence(rng: random.Random, min_len: int, max_len: int, num_symbols: int) -> str:
  length = min_len + _below(rng, max_len - min_len + 1)
  return ' '.join(str(_below(rng, num_symbols)) for _ in range(length))


def _draw_operand(rng: random.Random, max_digits: int) -> int:
  digits = 1 + _below(rng, max_digits)
  low = 0 if digits == 1 else 10 ** (digits - 1)
  return low + _below(rng, 10**digits - low)


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
  rng = _make_rng(task, split, seed)
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
    return _generate_dates(split, num_examples, seed)
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
