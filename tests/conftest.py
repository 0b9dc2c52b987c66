"""Test-wide settings: 8 fake CPU devices (sharding tests), fp32-exact matmuls, persistent compile cache."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_REPO, ".jax_cache"))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)

from vid2world_jax.testing import fixtures as _fx  # noqa: E402


@pytest.fixture(scope="session")
def shared_dir():
  d = _fx.shared_dir()
  if not os.path.isdir(d):
    pytest.fail(f"shared/ not found at {d}; set V2W_SHARED")
  return d


def pytest_terminal_summary(terminalreporter):
  """The fuzz corpus's cases per entry point and outcome (tests/_fuzz.py), when fuzz tests ran."""
  import sys  # pylint: disable=import-outside-toplevel
  fuzz = sys.modules.get("_fuzz")
  if fuzz is None or not fuzz.OUTCOMES:
    return
  terminalreporter.section("fuzz corpus")
  for (entry, outcome), n in sorted(fuzz.OUTCOMES.items()):
    terminalreporter.write_line(f"{entry:<28} {outcome:<10} {n:>5}")
  terminalreporter.write_line(f"{'total':<39} {sum(fuzz.OUTCOMES.values()):>5}")
