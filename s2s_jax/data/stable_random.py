"""Randomness that is the same on every machine and Python version: `random.Random(int).random()` only (the one
stream Python promises to keep), seeded from a SHA-256 of the given parts (never the salted `hash()` of a str)."""

import hashlib
import random

_CHUNK = 2**32


def make_rng(*parts: object) -> random.Random:
  """A generator seeded stably (SHA-256, not the salted `hash()`)."""
  text = '\x1f'.join(map(str, parts))
  digest = hashlib.sha256(text.encode('utf-8')).digest()
  return random.Random(int.from_bytes(digest[:8], 'big'))


def below(rng: random.Random, n: int) -> int:
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
