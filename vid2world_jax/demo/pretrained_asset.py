"""The shipped pretrained video model of the embedded default (the miniature's stand-in for DynamiCrafter).

One ``.npz`` file: every parameter of the bidirectional, action-free VDM under its ``/``-joined path, plus
``__meta__`` (JSON: the model config it was trained with, steps, final loss, wall time, the command that made it).
``load`` refuses a file whose model config differs from the one the run asks for (one-line error naming the
first differing field; execution-only knobs such as remat or the attention kernel are not compared), so a config
change can never silently start from mismatched weights.
"""

from __future__ import annotations

import json
import os

import numpy as np
from flax import traverse_util

ASSET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def asset_path(name: str) -> str:
  return name if os.path.isabs(name) else os.path.join(ASSET_DIR, name)


def save(path: str, params: dict, model_config: dict, **meta) -> str:
  flat = traverse_util.flatten_dict(params)
  arrays = {"/".join(map(str, k)): np.asarray(v, np.float32) for k, v in flat.items()}
  if any(k == "__meta__" for k in arrays):
    raise ValueError("a parameter is named __meta__")
  info = dict(meta, model_config=model_config, format=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, __meta__=np.asarray(json.dumps(info, sort_keys=True)), **arrays)
  os.replace(tmp, path)
  return path


def _first_difference(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if k not in a or k not in b:
        return f"{prefix}{k} (present in only one)"
      d = _first_difference(a[k], b[k], f"{prefix}{k}.")
      if d:
        return d
    return None
  norm = lambda x: list(x) if isinstance(x, (list, tuple)) else x
  return None if json.dumps(norm(a)) == json.dumps(norm(b)) else f"{prefix[:-1]}: file {a!r} vs run {b!r}"


def weight_config(model_config: dict) -> dict:
  """``model_config`` without the UNet's execution knobs (``unet.EXECUTION_KEYS``: remat, attention kernel,
  activation sharding), which do not change the weights' meaning."""
  from vid2world_jax.models.unet import EXECUTION_KEYS
  out = dict(model_config)
  if isinstance(out.get("unet"), dict):
    out["unet"] = {k: v for k, v in out["unet"].items() if k not in EXECUTION_KEYS}
  return out


def load(path: str, model_config) -> dict:
  """``{"params", "losses": [], "model_config", "steps", "command", "source": "shipped", ...}`` from ``path``."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"pretrained VDM file not found: {path} (re-create it with `python -m "
                            f"vid2world_jax.demo.export_pretrained`, or pretrain in the run: "
                            f"--config.demo.pretrain=run)")
  with np.load(path) as z:
    meta = json.loads(str(z["__meta__"]))
    # nnx pure dicts key list entries (blocks) by int: digit components are ints again
    flat = {tuple(int(p) if p.isdigit() else p for p in k.split("/")): z[k] for k in z.files if k != "__meta__"}
  want = json.loads(json.dumps(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config))
  diff = _first_difference(weight_config(json.loads(json.dumps(meta["model_config"]))), weight_config(want))
  if diff:
    raise ValueError(f"{path} was trained for another model config ({diff}); re-create it with `python -m "
                     f"vid2world_jax.demo.export_pretrained` or use --config.demo.pretrain=run")
  return {"params": traverse_util.unflatten_dict(flat), "losses": [], "model_config": meta["model_config"],
          "steps": int(meta.get("steps", 0)), "command": meta.get("command", ""), "source": "shipped",
          "final_loss": meta.get("final_loss"), "train_seconds": meta.get("seconds")}
