"""Nested Python values with arrays on disk in non-executable formats (no pickle is ever written or loaded).

A folder per tree:
  ``tree.json``   the structure: dicts, lists, tuples, str / int / float / bool / None; every array is a
                  reference ``{"__array__": name}``; dicts with non-string keys (nnx pure dicts index lists by
                  int) are ``{"__dict__": [[key, value], ...]}``, tuples ``{"__tuple__": [...]}``
  ``arrays.npz``  the arrays outside any ``params`` entry (``np.load(..., allow_pickle=False)``)
  ``params/``     the arrays under a ``params`` key (model parameters): an orbax checkpoint, restored as numpy
Numpy scalars are stored as JSON numbers. Anything else (objects, object arrays) is a TypeError at save time.
Saves are atomic (written to ``<dir>.tmp`` and renamed).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np

TREE, ARRAYS, PARAMS = "tree.json", "arrays.npz", "params"


def exists(path: str) -> bool:
  return os.path.exists(os.path.join(path, TREE))


def save(path: str, obj: Any) -> None:
  """Writes ``obj`` to the folder ``path`` (replacing it)."""
  arrays, params = {}, {}

  def enc(x, in_params: bool, where: str):
    if x is None or isinstance(x, (bool, str)):
      return x
    if isinstance(x, (int, float)) and not isinstance(x, np.generic):
      return x
    if isinstance(x, np.generic) and x.dtype.kind in "biuf":
      return x.item()
    if hasattr(x, "__array__") and not isinstance(x, (dict, list, tuple)):
      a = np.asarray(x)
      if a.dtype == object or a.dtype.kind not in "biufcUS":
        raise TypeError(f"tree_store: {where} is an array of dtype {a.dtype} (not storable without pickle)")
      store = params if in_params else arrays
      name = f"a{len(store)}"
      store[name] = a
      return {"__array__": name, "params": in_params}
    if isinstance(x, dict):
      inner = lambda k, v: enc(v, in_params or k == PARAMS, f"{where}/{k}")
      if all(isinstance(k, str) for k in x) and not any(k.startswith("__") for k in x):
        return {k: inner(k, v) for k, v in x.items()}
      for k in x:
        if not isinstance(k, (str, int)) or isinstance(k, bool):
          raise TypeError(f"tree_store: {where} has a key of type {type(k).__name__} (str or int only)")
      return {"__dict__": [[k, inner(k, v)] for k, v in x.items()]}
    if isinstance(x, list):
      return [enc(v, in_params, f"{where}/{i}") for i, v in enumerate(x)]
    if isinstance(x, tuple):
      return {"__tuple__": [enc(v, in_params, f"{where}/{i}") for i, v in enumerate(x)]}
    raise TypeError(f"tree_store: {where} is a {type(x).__name__} (not storable without pickle)")

  tree = enc(obj, False, "")
  tmp = path.rstrip("/") + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  with open(os.path.join(tmp, TREE), "w") as f:
    json.dump(tree, f)
  if arrays:
    np.savez(os.path.join(tmp, ARRAYS), **arrays)
  if params:
    import orbax.checkpoint as ocp
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(os.path.abspath(tmp), PARAMS), params)
    ckpt.wait_until_finished()
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)


def load(path: str) -> Any:
  """The tree saved by ``save`` in the folder ``path``."""
  with open(os.path.join(path, TREE)) as f:
    tree = json.load(f)
  arrays, params = {}, None
  if os.path.exists(os.path.join(path, ARRAYS)):
    with np.load(os.path.join(path, ARRAYS), allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  if os.path.isdir(os.path.join(path, PARAMS)):
    import jax
    import orbax.checkpoint as ocp
    restored = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(path), PARAMS))
    params = {k: np.asarray(jax.device_get(v)) for k, v in restored.items()}

  def dec(x):
    if isinstance(x, list):
      return [dec(v) for v in x]
    if not isinstance(x, dict):
      return x
    if "__array__" in x:
      return (params if x["params"] else arrays)[x["__array__"]]
    if "__dict__" in x:
      return {k: dec(v) for k, v in x["__dict__"]}
    if "__tuple__" in x:
      return tuple(dec(v) for v in x["__tuple__"])
    return {k: dec(v) for k, v in x.items()}

  return dec(tree)
