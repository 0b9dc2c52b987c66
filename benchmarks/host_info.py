"""Which CPU a benchmark ran on, printed and recorded beside its times.

The side-by-side ratios move with the host's CPU, not only with its load: on a 2-vCPU AMD EPYC of family 26 (Zen 5,
AVX-512) the JAX forward under XLA's defaults took 17.3-18.5 s and PyTorch's 24.2-25.3 s, where an earlier
session's host gave 27.9-29.4 s and 22.6-24.8 s (docs/profile.md). Compare numbers only between runs that name the same CPU.
"""

from __future__ import annotations

import os


def cpu_description(path: str = "/proc/cpuinfo") -> str:
  """``"<model name>, family F model M, N CPUs, AVX-512 yes/no"`` from ``/proc/cpuinfo`` (Linux), else the
  processor's name as far as the platform tells it."""
  fields = {}
  try:
    with open(path) as f:
      for line in f:
        if not line.strip():
          break   # the first processor's block is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
  except OSError:
    import platform  # pylint: disable=import-outside-toplevel
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
  avx512 = "yes" if "avx512f" in fields.get("flags", "").split() else "no"
  return (f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, "
          f"{os.cpu_count()} CPUs, AVX-512 {avx512}")


def environment() -> dict:
  """What a timing depends on beyond the code, for a benchmark's JSON line: the CPU, ``XLA_FLAGS`` and
  ``GLIBC_TUNABLES`` (the huge-page restart sets the latter; a PyTorch child process inherits both)."""
  return {"cpu": cpu_description(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def print_environment(env: dict, note: str = "") -> None:
  """The two console lines of :func:`environment`'s values; ``note`` ends the second."""
  print(f"CPU: {env['cpu']}")
  print(f"XLA_FLAGS: {env['xla_flags'] or '(none)'}; GLIBC_TUNABLES: {env['glibc_tunables'] or '(none)'}{note}")
