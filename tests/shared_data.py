"""Access to ../shared/data from tests: a missing file skips the test with the reason, or fails it where
S2S_REQUIRE_DATA=1 (as CI sets it; CONVENTIONS §1)."""

import os

from absl.testing import absltest

from s2s_jax.data import raw_files


def require(test: absltest.TestCase, *parts: str) -> str:
  """The path of ../shared/data/<parts> (any existing file or folder), or skip / fail the test."""
  path = os.path.join(raw_files.default_data_root(), *parts)
  if not os.path.exists(path):
    if os.environ.get('S2S_REQUIRE_DATA') == '1':
      test.fail(f'../shared/data not found: {path} (S2S_REQUIRE_DATA=1 requires it)')
    test.skipTest(f'../shared/data not found: {path}')
  return path


def require_folder(test: absltest.TestCase, folder: str | None, what: str) -> None:
  """Skips / fails unless `folder` (a corpus' raw folder, or None for generated data) exists."""
  if folder and not os.path.isdir(folder):
    if os.environ.get('S2S_REQUIRE_DATA') == '1':
      test.fail(f'{folder} is missing and S2S_REQUIRE_DATA=1 ({what})')
    test.skipTest(f'{folder} not found: {what} needs ../shared/data')
