"""host_memory: the command lines restart once with glibc's huge-page tunable where the kernel gives transparent
huge pages on request, and malloc'd memory then lands in huge pages."""

import os
import subprocess
import sys

from vid2world_jax import host_memory

SCRIPT = """
import ctypes, os
from vid2world_jax import host_memory
host_memory.reexec_with_huge_pages()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
n = 64 * 2 ** 20   # one malloc above glibc's mmap threshold, as XLA's step buffers are
p = libc.malloc(n)
ctypes.memset(p, 1, n)
huge = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")]
print(os.environ.get("GLIBC_TUNABLES", "-"), huge[0].split()[1] if huge else "-")
"""


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  f = tmp_path / "enabled"
  f.write_text("always [madvise] never\n")
  assert host_memory.thp_mode(str(f)) == "madvise"
  f.write_text("[always] madvise never\n")
  assert host_memory.thp_mode(str(f)) == "always"
  assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def test_restart_environment_only_where_it_changes_something():
  env = host_memory.huge_pages_env({"PATH": "/bin"}, mode="madvise")
  if not sys.platform.startswith("linux"):
    assert env is None
    return
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": host_memory.TUNABLE}
  kept = host_memory.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, mode="madvise")
  assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + host_memory.TUNABLE
  assert host_memory.huge_pages_env({"GLIBC_TUNABLES": host_memory.TUNABLE}, mode="madvise") is None  # no loop
  assert host_memory.huge_pages_env({"V2W_HUGE_PAGES": "0"}, mode="madvise") is None                 # opt-out
  assert host_memory.huge_pages_env({}, mode="always") is None
  assert host_memory.huge_pages_env({}, mode="never") is None
  assert host_memory.huge_pages_env({}, mode=None) is None or host_memory.thp_mode() == "madvise"


def _run(extra_env):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "V2W_HUGE_PAGES")}
  env.update(extra_env)
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  return out.stdout.split()


def test_a_command_restarts_with_the_tunable_and_gets_huge_pages():
  tunables, huge_kib = _run({})
  if host_memory.huge_pages_env({}) is None:   # off Linux, or the kernel's mode is not "madvise": no restart
    assert tunables == "-"
    return
  assert tunables == host_memory.TUNABLE
  assert int(huge_kib) >= 32 * 1024            # the 64 MiB block (2 MiB pages, less its unaligned ends)
  assert _run({"V2W_HUGE_PAGES": "0"})[0] == "-"
