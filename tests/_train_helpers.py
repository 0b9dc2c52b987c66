"""Shared helpers of the tests/test_train_*.py files (tiny configs, repo paths)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def tiny_config(arch: str = "toy", **overrides):
  """configs/test_tiny.py (toy denoiser by default: compiles in seconds on 2 shared cores)."""
  from configs import test_tiny
  cfg = test_tiny.get_config("toy" if arch == "toy" else None)
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg
