"""Lazy readers for PyTorch checkpoints and key/shape manifests.

Each reader returns a read-only ``Mapping[str, array]`` whose values are loaded one key at a time, so that
converting a 10 GB checkpoint holds at most the file's memory map plus one converted tensor.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterator, Mapping

import numpy as np


class SafetensorsCheckpoint(Mapping):
  """Lazy view of a ``.safetensors`` file (numpy arrays, read per key)."""

  def __init__(self, path: str):
    from safetensors import safe_open  # light dependency, always installed
    try:
      self._f = safe_open(path, framework="np")
      self._keys = list(self._f.keys())
    except Exception as e:  # safetensors raises its own error types for corrupt headers
      raise ValueError(f"cannot read safetensors file {path}: {e}") from e
    self.path = path

  def metadata(self) -> dict:
    return dict(self._f.metadata() or {})

  def __getitem__(self, key):
    if key not in self._keys:
      raise KeyError(key)
    return self._f.get_tensor(key)

  def __iter__(self) -> Iterator[str]:
    return iter(self._keys)

  def __len__(self):
    return len(self._keys)


class UntrustedPickleError(ValueError):
  """A torch pickle that needs more than tensors and plain containers to load (it would run code): refused."""

  def __init__(self, path: str, err: Exception):
    m = re.search(r"GLOBAL ([\w.]+)", str(err))
    if m:
      what = f"it references {m.group(1)}"
    else:   # torch's reason: the paragraph that is not its boilerplate
      parts = [p.strip() for p in str(err).split("\n\n") if p.strip()]
      core = [p for p in parts if not p.startswith(("Weights only load failed", "Check the documentation"))]
      what = " ".join((core or parts or ["unsupported content"])[0].split())[:200]
    super().__init__(f"refused {path}: not a plain weights file ({what}, which torch.load(weights_only=True) "
                     "will not run); convert it where its source is trusted, e.g. to .safetensors")


class TorchCheckpoint(Mapping):
  """Lazy view of a torch pickle (``.ckpt``/``.pt``/``.pth``); uses the ``state_dict`` entry if present.

  ``torch.load(..., mmap=True)`` maps the file instead of reading it, so tensors are paged in as they are
  converted. torch is imported here only; it is an optional dependency (``pip install .[convert]``).
  """

  def __init__(self, path: str):
    try:
      import torch
    except ImportError as e:
      raise ImportError("reading .ckpt/.pt files needs PyTorch: pip install 'torch==2.13.0' "
                        "(CPU wheel), or convert the file to .safetensors elsewhere") from e
    try:  # weights_only=True: tensors and plain containers only; a pickle that would run code is refused
      obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as e:
      raise UntrustedPickleError(path, e) from None
    except Exception as e:  # noqa: BLE001 - corrupt/legacy files raise many types
      try:  # legacy (non-zip) pickles cannot be memory-mapped
        obj = torch.load(path, map_location="cpu", weights_only=True)
      except pickle.UnpicklingError as e2:
        raise UntrustedPickleError(path, e2) from None
      except Exception:
        raise ValueError(f"cannot read torch checkpoint {path}: {' '.join(str(e).split())[:300]}") from e
    if isinstance(obj, Mapping) and "state_dict" in obj:
      obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
      raise ValueError(f"{path}: expected a state_dict mapping, got {type(obj).__name__}")
    self._sd = obj
    self.path = path

  def __getitem__(self, key):
    return self._sd[key]

  def __iter__(self):
    return iter(self._sd)

  def __len__(self):
    return len(self._sd)


class ManifestCheckpoint(Mapping):
  """A key/shape manifest (``shared/reference/manifests/*_state_dict.json``): values are shape tuples."""

  def __init__(self, path: str):
    if path.endswith(".tsv"):
      data = _read_tsv_manifest(path)
    else:
      with open(path) as f:
        data = json.load(f)
    if "keys" not in data:
      raise ValueError(f"{path}: not a state_dict manifest (no 'keys' list)")
    self._shapes = {k["key"]: tuple(k["shape"]) for k in data["keys"]}
    self.kinds = {k["key"]: k.get("kind", "param") for k in data["keys"]}
    self.meta = {k: v for k, v in data.items() if k != "keys"}
    self.path = path

  def __getitem__(self, key):
    return self._shapes[key]

  def __iter__(self):
    return iter(self._shapes)

  def __len__(self):
    return len(self._shapes)


def _read_tsv_manifest(path: str) -> dict:
  keys = []
  with open(path) as f:
    header = f.readline().rstrip("\n").split("\t")
    if header[:2] != ["key", "shape"]:
      raise ValueError(f"{path}: not a state_dict manifest TSV (header {header})")
    for line in f:
      if not line.strip():
        continue
      cols = dict(zip(header, line.rstrip("\n").split("\t")))
      shape = () if cols["shape"] in ("scalar", "") else tuple(int(x) for x in cols["shape"].split("x"))
      keys.append({"key": cols["key"], "shape": shape, "kind": cols.get("kind", "param")})
  return {"keys": keys}


def open_checkpoint(path: str) -> Mapping:
  """Opens ``path`` by extension: ``.safetensors``, ``.ckpt/.pt/.pth/.bin`` (torch), ``.json`` (manifest)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    return SafetensorsCheckpoint(path)
  if ext in (".ckpt", ".pt", ".pth", ".bin"):
    return TorchCheckpoint(path)
  if ext in (".json", ".tsv"):
    return ManifestCheckpoint(path)
  raise ValueError(f"unknown checkpoint type {ext!r} for {path} (want .safetensors, .ckpt/.pt/.pth or .json)")


def strip_prefix(ckpt: Mapping, prefix: str) -> dict:
  """Sub-mapping of keys starting with ``prefix`` (keys kept whole; values stay lazy via a view)."""
  return _PrefixView(ckpt, prefix)


class _PrefixView(Mapping):
  def __init__(self, base: Mapping, prefix: str):
    self._base, self._keys = base, [k for k in base if k.startswith(prefix)]

  def __getitem__(self, k):
    return self._base[k]

  def __iter__(self):
    return iter(self._keys)

  def __len__(self):
    return len(self._keys)


def as_numpy_dict(ckpt: Mapping) -> dict[str, np.ndarray]:
  from vid2world_jax.conversion.core import to_numpy
  return {k: to_numpy(ckpt[k]) for k in ckpt}
