"""The `dates` task (synthetic.generate('dates', ...) calls `generate` here).

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
"""

from collections.abc import Iterator
import dataclasses
import datetime
import random

from s2s_jax.data import stable_random

FIRST_DATE = datetime.date(1900, 1, 1)
LAST_DATE = datetime.date(2099, 12, 31)
TWO_DIGIT_YEARS = (1950, 2049)  # inclusive: `yy` >= 50 is 19yy, else 20yy
_DATE_POOL_SEED = 20240521  # constant: the split pools never depend on `seed`
# In this order from the start of the shuffled dates; train gets the rest.
_DATE_POOL_SIZES = {'test': 5_000, 'validation': 5_000}

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


def _date_pools() -> dict[str, list[int]]:
  """The fixed, disjoint date pools (proleptic ordinals) of each split."""
  ordinals = list(range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1))
  rng = random.Random(_DATE_POOL_SEED)
  for i in range(len(ordinals) - 1, 0, -1):  # Fisher-Yates, about 30 ms
    j = stable_random.below(rng, i + 1)
    ordinals[i], ordinals[j] = ordinals[j], ordinals[i]
  test_end = _DATE_POOL_SIZES['test']
  validation_end = test_end + _DATE_POOL_SIZES['validation']
  return {
    'test': ordinals[:test_end],
    'validation': ordinals[test_end:validation_end],
    'train': ordinals[validation_end:],
  }


def generate(split: str, num_examples: int, seed: int) -> Iterator[tuple[str, str]]:
  """Yields (human date, ISO date) pairs from the split's pool."""
  pool = _date_pools()[split]
  rng = stable_random.make_rng('dates', split, seed)
  four_digit = [f for f in DATE_FORMATS if not f.two_digit_year]
  for i in range(num_examples):
    if i < len(pool):  # partial Fisher-Yates: no replacement while it lasts
      j = i + stable_random.below(rng, len(pool) - i)
      pool[i], pool[j] = pool[j], pool[i]
      ordinal = pool[i]
    else:
      ordinal = pool[stable_random.below(rng, len(pool))]
    date = datetime.date.fromordinal(ordinal)
    in_window = TWO_DIGIT_YEARS[0] <= date.year <= TWO_DIGIT_YEARS[1]
    formats = DATE_FORMATS if in_window else four_digit
    yield formats[stable_random.below(rng, len(formats))].render(date), date.isoformat()
