"""Named rematerialisation (gradient-checkpointing) policies, chosen per block kind in the UNet config.

``"none"`` = no remat (every activation kept for the backward pass); any other name wraps the block in
``nnx.remat`` with that ``jax.checkpoint_policies`` policy:

* ``"nothing_saveable"``: keep only the block's inputs, recompute everything (least memory, ~+1 forward);
* ``"dots_saveable"``: keep every matmul/conv output, recompute the cheap element-wise ops and norms;
* ``"dots_with_no_batch_dims_saveable"``: keep the outputs of weight matmuls (no batch dims), recompute
  attention logits/probabilities (batched dots) and element-wise ops: attention-sized tensors are not stored;
* ``"offload_dots_to_host"``: like the previous one, but the kept matmul outputs go to pinned host memory
  (TPU/GPU with host offload support);
* ``"everything_saveable"``: a remat boundary that keeps everything (for comparisons only).
"""

from __future__ import annotations

import jax
from flax import nnx

BLOCK_KINDS = ("block", "resblock", "spatial", "temporal")   # whole UNet block, ResBlock, Spatial-/TemporalTransformer


def _offload():
  return jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host")


POLICIES = {
    "none": None,
    "nothing_saveable": lambda: jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": lambda: jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": lambda: jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "offload_dots_to_host": _offload,
    "everything_saveable": lambda: jax.checkpoint_policies.everything_saveable,
}


def check(name: str, where: str = "remat policy") -> str:
  if name not in POLICIES:
    raise ValueError(f"{where} must be one of {tuple(POLICIES)}, got {name!r}")
  return name


def wrap(fn, name: str, static_argnums=()):
  """``fn`` under ``nnx.remat`` with the named policy (``"none"``: ``fn`` unchanged)."""
  check(name)
  if name == "none":
    return fn
  return nnx.remat(fn, policy=POLICIES[name](), static_argnums=static_argnums)


def block_policies(cfg) -> dict[str, str]:
  """``{kind: policy}`` from a UNet config: ``remat_<kind>`` fields; the legacy boolean ``remat=True`` means
  ``block="nothing_saveable"`` (one remat region per input/middle/output block) unless ``remat_block`` is set."""
  out = {k: check(cfg.get(f"remat_{k}", "none"), f"remat_{k}") for k in BLOCK_KINDS}
  if cfg.get("remat", False) and out["block"] == "none":
    out["block"] = "nothing_saveable"
  return out
