"""Initialisation from a converted DynamiCrafter / Vid2World checkpoint (``convert_torch_weights.py`` output).

``load(cfg, mcfg, params, frozen, params_sh, frozen_sh) -> (params, frozen)``:
  * reads ``<init_from>/params`` (orbax) straight onto sharded device arrays: every leaf is restored with a
    NamedSharding from the same fsdp rules as the training state, so no parameter is gathered on one device;
  * UNet: every converted weight is copied; when the checkpoint is still bidirectional (converted without
    ``--causal``) and the config's temporal convs are causal, the temporal-conv kernels get the causal weight
    transfer ``config.init_transfer`` (shift | mask | mixed = the paper's extrapolative transfer, spec §2.2);
    a released Vid2World checkpoint never gets a transfer, and a model config that differs from the settings it
    was trained with (``conversion/vid2world.py``: ``ENFORCED``) is an error;
  * parameters the checkpoint lacks keep their fresh initialisation only if they are new by design (the action
    encoder ``action_emb``; also any name in ``config.init_fresh``); anything else missing, or any shape
    mismatch, is an error listing every problem;
  * resampler (trainable, resampler context), VAE and CLIP image encoder (frozen) are loaded the same way; the
    frozen empty-prompt text context is computed once with the converted CLIP text encoder.

``transfer_params(target, source, mode) -> (params, report)``: the same initialisation from another model's
parameters held in memory as pure dicts (e.g. a bidirectional video model trained by an earlier stage of a recipe),
lenient: parameters the source lacks or has with another shape keep their fresh init and are reported.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx, traverse_util

from vid2world_jax.storage import checkpointing
from vid2world_jax import sharding as shd

NEW_BY_DESIGN = ("action_emb",)   # Vid2World's action encoder: fresh init (spec §4), absent from DynamiCrafter


def _restore_sharded(path: str, mesh, rules, min_size):
  """The converted parameters, verified against ``params/integrity.json`` (written by the converter) and restored
  onto the fsdp shardings; a damaged checkpoint is one ``CheckpointCorrupt`` line naming the file."""
  ckptr = ocp.StandardCheckpointer()

  def restore():
    md = ckptr.metadata(path)
    meta_tree = md.item_metadata.tree if hasattr(md.item_metadata, "tree") else md.item_metadata

    def target(p, m):
      spec = shd.param_spec(shd.path_str(p), tuple(m.shape), mesh, rules, min_size) if len(m.shape) else \
          jax.sharding.PartitionSpec()
      return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=jax.sharding.NamedSharding(mesh, spec))

    abstract = jax.tree_util.tree_map_with_path(target, meta_tree)
    return ckptr.restore(path, abstract)

  try:
    return checkpointing.restore_verified(path, restore, what="init_from checkpoint")
  finally:
    checkpointing.close_quietly(ckptr)


def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, prefix + (str(k),)))
    else:
      out[prefix + (str(k),)] = v
  return out


def _merge(name, ours: dict, theirs: dict, *, fresh=(), transfer=None, problems: list):
  """Returns ``ours`` with every leaf replaced by the checkpoint's (flat str-key lookup)."""
  flat_theirs = _flat(theirs)
  used = set()

  def one(path, leaf):
    key = tuple(shd.path_str(path).split("/"))
    if key not in flat_theirs:
      if any(f in key for f in fresh):
        return leaf
      problems.append(f"{name}: missing in checkpoint: {'/'.join(key)}")
      return leaf
    used.add(key)
    val = flat_theirs[key]
    if transfer is not None:
      val = transfer(key, val)
    if tuple(val.shape) != tuple(leaf.shape):
      problems.append(f"{name}: shape mismatch {'/'.join(key)}: checkpoint {tuple(val.shape)} vs model "
                      f"{tuple(leaf.shape)}")
      return leaf
    return jax.device_put(val.astype(leaf.dtype), leaf.sharding)

  out = jax.tree_util.tree_map_with_path(one, ours)
  unused = sorted("/".join(k) for k in flat_theirs if k not in used)
  if unused:
    problems.append(f"{name}: {len(unused)} checkpoint weights unused, e.g. {unused[:3]}")
  return out


def load(cfg, mcfg, params, frozen, params_sh, frozen_sh):
  """See module docstring. ``params`` may be None (resume: only the frozen parts are reloaded)."""
  from vid2world_jax.conversion import dynamicrafter, vid2world
  from vid2world_jax.models import weight_transfer

  path = cfg.init_from
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"init_from {path} is not a converted checkpoint (no config.json)")
  from vid2world_jax import user_input  # pylint: disable=import-outside-toplevel
  meta = user_input.read_json(cfg_path, f"init_from {path}: converted checkpoint config")
  if not isinstance(meta.get("causal") or {}, dict) or not isinstance(meta.get("components", {}), dict):
    raise user_input.UserInputError(f"init_from {cfg_path}: 'causal' and 'components' must be JSON objects")
  mesh = jax.tree.leaves(frozen_sh or params_sh)[0].mesh if jax.tree.leaves(frozen_sh or params_sh) else None
  rules = [tuple(r) for r in cfg.mesh.rules]
  tree = _restore_sharded(os.path.join(os.path.abspath(path), "params"), mesh, rules, int(cfg.mesh.fsdp_min_size))
  problems: list[str] = []

  record = meta.get("causal") or {}  # convert_torch_weights.py: --causal options, or a Vid2World import's settings
  vid2world.check_model_config(record, mcfg.unet, f"init_from {path}")
  already_causal = bool(record) and bool(record.get("trained_causal", record.get("enabled", True)))
  needs_transfer = mcfg.unet.temporal_conv_padding == "causal" and not already_causal
  mode = cfg.get("init_transfer", "mixed")

  def unet_transfer(key, val):
    if needs_transfer and dynamicrafter.is_temporal_conv_kernel(key):
      return weight_transfer.transfer_flax_kernel(val, mode)
    return val

  if params is not None:
    if "unet" not in tree:
      raise ValueError(f"init_from {path}: no 'unet' component in the checkpoint")
    fresh = tuple(NEW_BY_DESIGN) + tuple(cfg.get("init_fresh", ()))
    params = dict(params)
    params["unet"] = _merge("unet", params["unet"], tree["unet"], fresh=fresh, transfer=unet_transfer,
                            problems=problems)
    if "resampler" in params:
      params["resampler"] = _merge("resampler", params["resampler"], tree.get("resampler", {}), problems=problems)

  fstate = nnx.to_pure_dict(frozen)
  for comp, attr in (("vae", "vae"), ("clip_image", "clip_image")):
    if attr in fstate:
      fstate[attr] = _merge(comp, fstate[attr], tree.get(comp, {}), problems=problems)
  if "text_context" in fstate:
    fstate["text_context"] = _empty_prompt_context(meta, tree, fstate["text_context"])
  if problems:
    raise ValueError(f"init_from {path}: {len(problems)} problem(s): " + "; ".join(problems[:20]))
  nnx.replace_by_pure_dict(frozen, fstate)
  return params, frozen


def transfer_params(target: dict, source: dict, mode: str) -> tuple[dict, dict]:
  """Copies ``source`` (e.g. a bidirectional VDM) into ``target`` (a causal world model), both pure dicts.

  Same path and shape -> copied; temporal-conv kernels (``is_temporal_conv_kernel``) -> weight transfer
  ``mode`` on the taps axis; target-only parameters (the action encoder) and shape mismatches keep their fresh init.
  Returns ``(new target as numpy arrays, report {"copied", "transferred", "new", "unused"})``.
  """
  from vid2world_jax.conversion.dynamicrafter import is_temporal_conv_kernel
  from vid2world_jax.models import weight_transfer
  ft = traverse_util.flatten_dict(target)
  fs = traverse_util.flatten_dict(source)
  rep = {"copied": 0, "transferred": 0, "new": [], "unused": sorted(".".join(map(str, k)) for k in set(fs) - set(ft))}
  out = {}
  for path, v in ft.items():
    if path not in fs:
      out[path] = np.asarray(v)
      rep["new"].append(".".join(map(str, path)))
      continue
    w = np.asarray(fs[path])
    if w.shape != tuple(v.shape):  # e.g. an input layer that gained action inputs: keeps its fresh init
      out[path] = np.asarray(v)
      rep["new"].append(".".join(map(str, path)) + f" (shape {w.shape} -> {tuple(v.shape)})")
      continue
    if is_temporal_conv_kernel(path) and w.ndim >= 3 and w.shape[0] == 3:
      w = np.asarray(weight_transfer.transfer_kernel(w, mode, axis=0))
      rep["transferred"] += 1
    else:
      rep["copied"] += 1
    out[path] = w.astype(np.asarray(v).dtype)
  return traverse_util.unflatten_dict(out), rep


def _empty_prompt_context(meta, tree, like):
  """OpenCLIP text features of the empty prompt "" ([77, D], penultimate layer), Vid2World's constant text."""
  from ml_collections import ConfigDict

  from vid2world_jax.models import clip_text, tokenizer
  if "clip_text" not in tree:
    raise ValueError("init_from: the resampler context needs the 'clip_text' component for the empty prompt")
  ccfg = ConfigDict(meta["components"]["clip_text"])
  model = clip_text.build(ccfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state)
  pure = _merge("clip_text", pure, tree["clip_text"], problems=[])
  nnx.replace_by_pure_dict(state, pure)
  model = nnx.merge(graphdef, state)
  ids = jnp.asarray(tokenizer.ClipTokenizer(context_length=int(ccfg.context_length))([""]))
  out = model(ids)[0].astype(jnp.float32)
  return jax.device_put(out, like.sharding)
