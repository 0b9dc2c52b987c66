"""Whole-checkpoint conversion of DynamiCrafter / Vid2World checkpoints into Flax parameters.

A DynamiCrafter ``model.ckpt`` holds five networks under fixed prefixes plus the diffusion-schedule buffers.
Each network's model module (``vid2world_jax.models.<name>``) owns its config and its explicit name table; this
module only dispatches, applies the optional causal conversion, verifies schedule buffers, and writes/reads the
converted result:

    <out>/config.json   {"variant", "components": {name: config dict}, "causal": {...}, "report": {...}}
    <out>/params/       orbax PyTree checkpoint {name: nested param dict}
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from flax import nnx

from vid2world_jax.storage import integrity
from vid2world_jax.conversion import checkpoint_io, core, vid2world

# name -> module path. Order = order of the checkpoint.
COMPONENTS: dict[str, str] = {
    "unet": "vid2world_jax.models.unet",
    "vae": "vid2world_jax.models.vae",
    "resampler": "vid2world_jax.models.resampler",
    "clip_text": "vid2world_jax.models.clip_text",
    "clip_image": "vid2world_jax.models.clip_image",
}
VARIANTS = ("256", "512", "1024")

# Top-level buffers of LatentVisualDiffusion: recomputed by vid2world_jax.diffusion.schedules and, when a
# checkpoint carries values, checked against it (a mismatch means a wrong --variant).
SCHEDULE_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "scale_arr",
)


def component_module(name: str):
  if name not in COMPONENTS:
    raise ValueError(f"unknown component {name!r}; known: {sorted(COMPONENTS)}")
  return importlib.import_module(COMPONENTS[name])


@dataclasses.dataclass
class CausalOptions:
  """How to causalize the UNet while converting (see README "Causal options")."""
  enabled: bool = False
  temporal_conv_transfer: str = "mixed"   # shift | mask | mixed (= the paper's extrapolative transfer)
  temporal_norm: str = "cumulative"       # cumulative | per_frame (strict) | joint (as the original)
  causal_init_attn: bool = True           # the original DynamiCrafter init_attn is never causal

  def apply_to_unet_config(self, cfg) -> None:
    if not self.enabled:
      return
    with cfg.unlocked() if hasattr(cfg, "unlocked") else _nullcontext():
      cfg.causal_temporal_attention = True
      cfg.causal_init_attn = self.causal_init_attn
      cfg.temporal_conv_padding = "causal"
      cfg.temporal_norm = self.temporal_norm


class _nullcontext:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def is_temporal_conv_kernel(path: tuple) -> bool:
  """True for the kernels of the 4 convs of every temporal-conv block (``...temopral_conv.convN.K.kernel``)."""
  return "temopral_conv" in path and path[-1] == "kernel"


def abstract_component(name: str, cfg):
  """``(abstract module, {path: shape})`` for a component built from ``cfg`` without allocating."""
  mod = component_module(name)
  from vid2world_jax.models import tracing
  with tracing.cheap_tracer_errors():  # otherwise quadratic in the number of parameters (models/tracing.py)
    abstract = nnx.eval_shape(lambda: mod.build(cfg, rngs=nnx.Rngs(0)))
  return abstract, core.param_shapes(nnx.state(abstract, nnx.Param))


def detect_vid2world(checkpoint: Mapping) -> dict | None:
  """Trained settings of a released Vid2World checkpoint, ``None`` for DynamiCrafter (see ``conversion.vid2world``)."""
  return vid2world.detect(checkpoint)


def convert_checkpoint(
    checkpoint: Mapping,
    variant: str,
    *,
    components: Iterable[str] = tuple(COMPONENTS),
    causal: CausalOptions | None = None,
    config_overrides: Mapping[str, Mapping] | None = None,
    component_configs: Mapping | None = None,
    extra_ignore: Iterable[str] = (),
    shapes_only: bool = False,
    progress: Callable | None = None,
) -> tuple[dict, dict, dict]:
  """Converts ``checkpoint`` (key -> array, or key -> shape with ``shapes_only``).

  ``component_configs`` ({name: ConfigDict}) replaces ``real_config(variant)`` for those components (tiny
  models in tests, or a user's custom sizes); ``config_overrides`` ({name: {field: value}}) edits fields.

  A released Vid2World checkpoint (:func:`detect_vid2world`) gets the UNet settings it was trained with and no
  weight transfer; asking for ``causal`` on it is an error.

  Returns ``(configs {name: ConfigDict}, params {name: {path: array}}, reports {name: core.Report})``.
  Raises ``core.ConversionError`` listing every problem; checkpoint keys outside all converted components and
  outside :data:`SCHEDULE_BUFFERS` are errors unless matched by ``extra_ignore`` globs.
  """
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  causal = causal or CausalOptions()
  v2w = vid2world.detect(checkpoint)
  if v2w and causal.enabled:
    raise core.ConversionError("this is a released Vid2World checkpoint, already trained causal: convert it "
                               "without --causal (no weight transfer may be applied)")
  components = list(components)
  configs, params, reports = {}, {}, {}
  problems = []
  for name in components:
    mod = component_module(name)
    if component_configs and name in component_configs:
      cfg = component_configs[name].copy_and_resolve_references()
    else:
      cfg = mod.real_config(variant)
    for k, v in (config_overrides or {}).get(name, {}).items():
      with cfg.unlocked():
        cfg[k] = v
    if name == "unet":
      causal.apply_to_unet_config(cfg)
      if v2w:
        settings = vid2world.unet_settings(v2w)
        if not (component_configs and name in component_configs):
          settings.update(vid2world.release_settings(v2w))
        with cfg.unlocked():
          cfg.update(settings)
    abstract, shapes = abstract_component(name, cfg)
    table = mod.torch_name_table(abstract)
    sub = checkpoint_io.strip_prefix(checkpoint, mod.WEIGHTS_PREFIX)
    p, rep = core.convert(sub, table, shapes, aliases=mod.TORCH_ALIASES,
                          ignore=list(mod.TORCH_IGNORE) + list(extra_ignore),
                          shapes_only=shapes_only, progress=progress)
    if name == "unet" and causal.enabled and not shapes_only:
      p = apply_temporal_conv_transfer(p, causal.temporal_conv_transfer)
    configs[name], params[name], reports[name] = cfg, p, rep
    if not rep.ok:
      problems.append(f"[{name}] " + rep.summary())
  prefixes = tuple(component_module(n).WEIGHTS_PREFIX for n in COMPONENTS)
  stray = [k for k in checkpoint if not k.startswith(prefixes) and k not in SCHEDULE_BUFFERS
           and not any(_glob(k, pat) for pat in extra_ignore)]
  if stray:
    problems.append(f"{len(stray)} checkpoint keys belong to no component: {stray[:20]}")
  if not shapes_only:
    problems += check_schedule_buffers(checkpoint, variant)
  if problems:
    raise core.ConversionError("conversion failed:\n" + "\n".join(problems))
  return configs, params, reports


def apply_temporal_conv_transfer(params: dict, mode: str) -> dict:
  """Applies the bidirectional -> causal temporal-conv kernel transfer to every temporal-conv kernel."""
  from vid2world_jax.models import weight_transfer
  out = dict(params)
  n = 0
  for path, w in params.items():
    if is_temporal_conv_kernel(path):
      out[path] = np.asarray(weight_transfer.transfer_temporal_kernel(w, mode, axis=0), np.float32)
      n += 1
  if n == 0:
    raise core.ConversionError("causal conversion requested but no temporal-conv kernels were found")
  return out


def check_schedule_buffers(checkpoint: Mapping, variant: str) -> list[str]:
  present = [k for k in SCHEDULE_BUFFERS if k in checkpoint]
  if not present:
    return []
  from vid2world_jax.diffusion import schedules
  ours = schedules.torch_buffers(schedules.schedule_for_variant(variant))
  errs = []
  for k in present:
    theirs = core.to_numpy(checkpoint[k]).astype(np.float64)
    if k not in ours:
      errs.append(f"schedule buffer {k!r} is in the checkpoint but not computed for variant {variant}")
      continue
    mine = np.asarray(ours[k], np.float64)
    if mine.shape != theirs.shape or not np.allclose(mine, theirs, rtol=1e-5, atol=1e-7):
      errs.append(f"schedule buffer {k!r} differs from the variant-{variant} schedule "
                  f"(wrong --variant?)")
  return errs


def _glob(key, pat):
  import fnmatch
  return fnmatch.fnmatchcase(key, pat)


# ---------------------------------------------------------------------------------------------------------
# Writing / reading converted checkpoints.


def _nest(flat: Mapping[tuple, np.ndarray]) -> dict:
  tree: dict = {}
  for path, v in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(str(p), {})
    node[str(path[-1])] = v
  return tree


def save_converted(out_dir: str, variant: str, configs: Mapping, params: Mapping, *, extra: Mapping | None = None):
  """Writes ``config.json`` and an orbax ``params/`` checkpoint (keys stringified, see :func:`load_converted`)."""
  import orbax.checkpoint as ocp
  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  tree = {name: _nest(p) for name, p in params.items()}
  ckptr = ocp.StandardCheckpointer()
  target = os.path.join(out_dir, "params")
  ckptr.save(target, tree, force=True)
  ckptr.wait_until_finished()
  integrity.seal_step(target)   # init_from verifies it (README, Reliability)
  meta = {"variant": variant, "components": {n: c.to_dict() for n, c in configs.items()}}
  meta.update(extra or {})
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(meta, f, indent=2, default=str)


def load_converted(out_dir: str) -> tuple[dict, dict]:
  """Reads a converted checkpoint: ``(meta dict from config.json, {component: nested param dict})``."""
  import orbax.checkpoint as ocp
  cfg_path = os.path.join(out_dir, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{out_dir} is not a converted checkpoint (no config.json)")
  from vid2world_jax import user_input
  from vid2world_jax.storage import checkpointing
  meta = user_input.read_json(cfg_path, "converted checkpoint config")
  path = os.path.join(os.path.abspath(out_dir), "params")
  ckptr = ocp.StandardCheckpointer()
  try:
    tree = checkpointing.restore_verified(path, lambda: ckptr.restore(path), what="converted checkpoint")
  finally:
    checkpointing.close_quietly(ckptr)
  return meta, tree


def nested_to_flat(tree: Mapping) -> dict[tuple, np.ndarray]:
  """Inverse of the nesting in :func:`save_converted`: digit keys become ints (``nnx.List`` indices)."""
  out = {}

  def rec(node, prefix):
    for k, v in node.items():
      key = int(k) if isinstance(k, str) and k.isdigit() else k
      if isinstance(v, Mapping):
        rec(v, prefix + (key,))
      else:
        out[prefix + (key,)] = np.asarray(v)
  rec(tree, ())
  return out
