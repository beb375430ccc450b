"""Credentials are never stored or printed: a database URL (Optuna's --storage) is shown as
`postgresql://user:***@host/db`.

`url(u)` hides the password (everything between the first ':' of the user part and the last '@' before the host)
and every query value whose key names a secret (password=, sslpassword=, token=, ...), keeping the rest of `u` as it
was written; a password that SQLAlchemy's URL parser (`sqlalchemy.engine.make_url`, when installed) reads elsewhere
(an unescaped '/' in it) is hidden too. `text(s, u)` hides the same secrets wherever a message (a driver's error, a
log line) quotes them.
"""

import re

HIDDEN = '***'
_SECRET_KEY = re.compile(r'pass|pwd|secret|token|key|credential|auth', re.IGNORECASE)
_AUTHORITY = re.compile(r'^(?P<scheme>(?:[^/?#]*?://)?)(?P<authority>[^/?#]*)')
_QUERY_ITEM = re.compile(r'(?P<head>[?&;](?P<key>[^=&;#]+)=)(?P<value>[^&;#]*)')


def _sqlalchemy_secrets(u: str) -> list[str]:
  """The password and secret query values as SQLAlchemy reads `u` (none without SQLAlchemy or for a non-URL)."""
  try:
    from sqlalchemy.engine import make_url  # pylint: disable=g-import-not-at-top

    parsed = make_url(u)
  except Exception:  # pylint: disable=broad-except  (no SQLAlchemy, or not a URL it reads: the plain reading only)
    return []
  values = [parsed.query[k] for k in parsed.query if _SECRET_KEY.search(k)]
  values = [v for vs in values for v in (vs if isinstance(vs, tuple) else [vs])]
  return [str(s) for s in [parsed.password, *values] if s]


def _plain_secrets(u: str) -> list[str]:
  out = [q['value'] for q in _QUERY_ITEM.finditer(u) if _SECRET_KEY.search(q['key'])]
  m = _AUTHORITY.match(u)
  userinfo = m['authority'].rpartition('@')[0]
  return out + ([userinfo.partition(':')[2]] if ':' in userinfo else [])


def url(u: str) -> str:
  """`u` with its password and secret query values replaced by ***; unchanged when it holds none."""
  if not u:
    return u
  original, m = u, _AUTHORITY.match(u)
  userinfo, at, host = m['authority'].rpartition('@')
  if ':' in userinfo:
    u = f'{m["scheme"]}{userinfo.partition(":")[0]}:{HIDDEN}{at}{host}{u[m.end() :]}'
  u = _QUERY_ITEM.sub(lambda q: q['head'] + (HIDDEN if _SECRET_KEY.search(q['key']) else q['value']), u)
  for secret in _sqlalchemy_secrets(original):  # (one the plain reading missed is still in the password's place)
    if secret != HIDDEN:
      u = u.replace(f':{secret}@', f':{HIDDEN}@', 1)
  return u


def text(s: str, u: str) -> str:
  """`s` (an error message, a log line) with every secret of URL `u` replaced by ***."""
  if not u:
    return s
  s = s.replace(u, url(u))
  for secret in sorted(set(_plain_secrets(u) + _sqlalchemy_secrets(u)) - {'', HIDDEN}, key=len, reverse=True):
    s = s.replace(secret, HIDDEN)
  return s


def has_hidden(u: str) -> bool:
  """Whether `u` was redacted: a secret of it reads *** (it cannot log in as it is)."""
  return HIDDEN in _plain_secrets(u)


def without_hidden(u: str) -> str:
  """Redacted `u` without its hidden parts (`scheme://user@host/db`): the database driver then reads the password
  from its own place (libpq: PGPASSWORD or ~/.pgpass)."""
  m = _AUTHORITY.match(u)
  userinfo, at, host = m['authority'].rpartition('@')
  if userinfo.partition(':')[2] == HIDDEN:
    u = f'{m["scheme"]}{userinfo.partition(":")[0]}{at}{host}{u[m.end() :]}'
  u = re.sub(r'([?&;])[^=&;#]+=\*\*\*(?=[&;#]|$)[&;]?', r'\1', u)
  return re.sub(r'[?&;](?=#|$)', '', u)
