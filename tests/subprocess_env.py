"""XLA_FLAGS for the subprocesses tests start (python -m s2s_jax.main, scripts/*.py): their own device count plus
the test session's compile options (S2S_TEST_XLA_FLAGS, set in conftest.py)."""
import os


def xla_flags(devices: int = 1) -> str:
  return f'--xla_force_host_platform_device_count={devices} {os.environ.get("S2S_TEST_XLA_FLAGS", "")}'.strip()
