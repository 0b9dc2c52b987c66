"""The one conversion between model pixels (float in [-1, 1]) and uint8 RGB, used by every part of the project.

``to_uint8`` rounds to the nearest level and clips; ``from_uint8`` is its inverse on the 256 levels. Both take
numpy arrays (numpy out) or jax arrays, traced ones included (jax out).
"""

from __future__ import annotations

import numpy as np


def _xp(x):
  if isinstance(x, np.ndarray | np.generic | list | tuple | int | float):
    return np
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel  (numpy callers need no jax import)
  return jnp


def to_uint8(frames):
  """float in [-1, 1] -> uint8 in [0, 255]: ``round((x + 1) * 127.5)``, clipped; jit-able."""
  xp = _xp(frames)
  return xp.clip(xp.round((xp.asarray(frames).astype(xp.float32) + 1.0) * 127.5), 0, 255).astype(xp.uint8)


def from_uint8(frames):
  """uint8 in [0, 255] -> float32 in [-1, 1] (``x / 127.5 - 1``)."""
  xp = _xp(frames)
  return xp.asarray(frames).astype(xp.float32) * xp.float32(1.0 / 127.5) - xp.float32(1.0)
