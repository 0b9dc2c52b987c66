"""Transparent huge pages for the process's heap, asked for once at a command line's start (Linux, glibc).

XLA's CPU runtime (and PyTorch's) allocates every step's large buffers afresh; glibc maps them with ``mmap`` and
unmaps them when freed, so each step faults its memory in again, 4 KiB at a time: 1.4 M page faults and ~5 CPU-s of
kernel time per training step of the width-64 UNet. Where the kernel gives transparent huge pages only on request
(``/sys/kernel/mm/transparent_hugepage/enabled`` = ``[madvise]``, the common default), glibc's tunable
``glibc.malloc.hugetlb=1`` makes malloc request them. A tunable is read when the process starts, so
:func:`reexec_with_huge_pages` starts the same command again with it set (``os.execve``, before any model is built;
once: the new process sees the tunable and goes on). Measured: the default job's fine-tune 42.2 -> 46.6 frames/s on
the 2-core CPU host (docs/profile.md). Opt out with ``V2W_HUGE_PAGES=0``; nothing happens off Linux, where the
kernel already gives huge pages to every large mapping (``[always]``) or none (``[never]``), or where the command
already set the tunable. An older glibc ignores the unknown tunable (then the one restart is all it costs).
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent-huge-page mode (``"always"``, ``"madvise"``, ``"never"``), None if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def huge_pages_env(environ=None, mode: str | None = None) -> dict | None:
  """The environment to restart with, or None when a restart would change nothing (see the module doc)."""
  environ = os.environ if environ is None else environ
  if not sys.platform.startswith("linux") or environ.get("V2W_HUGE_PAGES", "1") == "0":
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables or (mode or thp_mode()) != "madvise":
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
  return env


def reexec_with_huge_pages() -> None:
  """Restarts this command (``sys.orig_argv``) with :data:`TUNABLE` where it helps; returns otherwise. Call it
  first thing in a command line's entry (its ``__main__`` block or the ``run()`` that a shim calls)."""
  env = huge_pages_env()
  if env is not None and getattr(sys, "orig_argv", None):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + list(sys.orig_argv[1:]), env)
