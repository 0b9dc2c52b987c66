"""The one check that a parameter tree fits a model's: same dict structure, same leaf shapes (one-line errors).

Used where parameters meet a model built from a config: a checkpoint restored for inference
(``checkpointing.restore_params``), parameters handed to the inference session (``InferenceSession.from_params``)
and to a fresh training run (``training.setup.place_params``).
"""

from __future__ import annotations

import numpy as np


def check_params_tree(want, got, where: str, path: str = "") -> None:
  """Raises ValueError (one line, starting with ``where``) unless ``got`` has the dict structure and leaf shapes
  of ``want``. Keys compare as strings (orbax stores int keys, e.g. list entries of nnx pure dicts, as strings);
  leaves need only a ``shape`` (arrays, ``jax.ShapeDtypeStruct``, orbax metadata)."""
  if isinstance(want, dict):
    if not isinstance(got, dict):
      raise ValueError(f"{where}: {path or '/'} is not a dict")
    have = {str(k) for k in got}
    missing = [str(k) for k in want if str(k) not in have]
    if missing:
      raise ValueError(f"{where} lack {path}/{missing[0]} (wrong config for these parameters?)")
    extra = sorted(have - {str(k) for k in want})
    if extra:
      raise ValueError(f"{where} have entries the config's model lacks: {path}/{extra[:5]}")
    by_str = {str(k): v for k, v in got.items()}
    for k, v in want.items():
      check_params_tree(v, by_str[str(k)], where, f"{path}/{k}")
    return
  shape = tuple(got.shape) if hasattr(got, "shape") else tuple(np.shape(got))
  if shape != tuple(want.shape):
    raise ValueError(f"{where}: {path} has shape {shape}, the config's model {tuple(want.shape)}")
