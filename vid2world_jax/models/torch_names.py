"""The PyTorch names of this project's parameters: the vocabulary of the name tables that each model emits
(``vid2world_jax.models.<model>.torch_name_table``) and ``conversion.core.convert`` applies.

A *table* is a list of :class:`Entry` (one per Flax parameter): which torch key feeds it and how the array is
transformed (a key of :data:`TRANSFORMS`: the torch -> Flax layout of each layer kind). :func:`auto_entries`
walks a module tree and emits the entry implied by each layer type (``nnx.Linear`` -> ``weight`` transposed,
``nnx.Conv`` -> ``weight`` OI... -> ...IO, norms -> weight/bias); models add explicit entries for free-standing
parameters. Lives in ``models/`` (not ``conversion/``) so that the models, which own their names, import nothing
from the converter; ``conversion/`` imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flax import nnx

from vid2world_jax.models import layers


def _linear(w):  # torch [out, in] -> flax [in, out]
  return w.T


def _conv(w):  # torch [O, I, *k] -> flax [*k, I, O]
  return w.transpose(tuple(range(2, w.ndim)) + (1, 0))


def _copy(w):
  return w


TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": _linear,
    "conv": _conv,
    "copy": _copy,
}


def register_transform(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
  """Adds a named transform (must work on read-only/broadcast views, so it can also be shape-checked)."""
  if name in TRANSFORMS and TRANSFORMS[name] is not fn:
    raise ValueError(f"transform {name!r} already registered")
  TRANSFORMS[name] = fn


@dataclasses.dataclass(frozen=True)
class Entry:
  torch_key: str          # full key in the checkpoint, prefix included
  path: tuple             # path of the parameter in nnx.state(model, nnx.Param)
  transform: str = "copy"  # key of TRANSFORMS


def torch_name(path: Iterable[Any]) -> str:
  return ".".join(str(p) for p in path)


def auto_entries(module: nnx.Module, prefix: str, path_prefix: tuple = ()) -> list[Entry]:
  """Entries for every Linear / Conv / Embed / norm inside ``module`` whose path mirrors the torch name."""
  out = []
  for path, m in nnx.iter_graph(module):
    path = tuple(path)
    base = prefix + torch_name(path)
    full = path_prefix + path
    if isinstance(m, nnx.Linear):
      out.append(Entry(base + ".weight", full + ("kernel",), "linear"))
      if m.bias is not None:
        out.append(Entry(base + ".bias", full + ("bias",)))
    elif isinstance(m, nnx.Conv):
      out.append(Entry(base + ".weight", full + ("kernel",), "conv"))
      if m.bias is not None:
        out.append(Entry(base + ".bias", full + ("bias",)))
    elif isinstance(m, nnx.Embed):
      out.append(Entry(base + ".weight", full + ("embedding",)))
    elif isinstance(m, (layers.GroupNorm, nnx.LayerNorm, nnx.GroupNorm)):
      if getattr(m, "scale", None) is not None:
        out.append(Entry(base + ".weight", full + ("scale",)))
      if getattr(m, "bias", None) is not None:
        out.append(Entry(base + ".bias", full + ("bias",)))
  return out
