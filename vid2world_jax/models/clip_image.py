"""OpenCLIP ViT-H/14 image encoder as DynamiCrafter's ``embedder`` (``FrozenOpenCLIPImageEmbedderV2``).

What runs (``forward = encode_with_vision_transformer``):

1. :func:`image_preprocess.preprocess`: kornia bicubic antialiased resize to 224x224 (aspect ratio not
   kept), ``(x + 1) / 2``, CLIP mean/std.
2. ``conv1`` (patch 14, stride 14, no bias) -> ``[B, 16*16, W]`` row-major over the patch grid, prepend
   ``class_embedding``, add ``positional_embedding [257, W]``, ``ln_pre``.
3. All transformer blocks (pre-LN, exact GELU, **no mask**).
4. Return the full ``[B, 257, W]`` sequence: no ``ln_post``, no ``proj``, no pooling.

Module tree mirrors ``embedder.model.visual.{conv1, class_embedding, positional_embedding, ln_pre,
transformer.resblocks.{i}.*}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models import torch_names
from vid2world_jax.models import clip_common, image_preprocess, layers

WEIGHTS_PREFIX = "embedder."

TORCH_ALIASES: dict[str, str] = {}

TORCH_IGNORE: list[str] = [
    # Pooled-output head of the vision tower (LayerNorm on the class token + projection to the joint CLIP
    # space): DynamiCrafter takes the whole un-normalised token sequence instead.
    "embedder.model.visual.ln_post.*",
    "embedder.model.visual.proj",
    # Text-side parameters that survive `del model.transformer` in the embedder's __init__; the image
    # embedder never encodes text (the text encoder is cond_stage_model, with its own copy of these).
    "embedder.model.token_embedding.*",
    "embedder.model.positional_embedding",
    "embedder.model.ln_final.*",
    "embedder.model.text_projection",
    # Contrastive-loss temperature; unused at inference.
    "embedder.model.logit_scale",
]


def make_config(width, head_width, layers_, patch_size, image_size, antialias, mlp_ratio=4.0, resize=(224, 224),
            mean=image_preprocess.CLIP_MEAN, std=image_preprocess.CLIP_STD):
  if width % head_width:
    raise ValueError(f"vision width {width} not divisible by head_width {head_width}")
  if image_size % patch_size:
    raise ValueError(f"image_size {image_size} not divisible by patch_size {patch_size}")
  c = ml_collections.ConfigDict()
  c.width = width              # transformer width W
  c.heads = width // head_width  # attention heads (open_clip: width // head_width)
  c.layers = layers_           # number of resblocks (all run)
  c.patch_size = patch_size    # conv1 kernel = stride
  c.image_size = image_size    # images are resized to image_size x image_size before conv1
  c.mlp_ratio = float(mlp_ratio)  # c_fc width = mlp_ratio * W
  c.ln_eps = 1e-5              # LayerNorm eps (torch default)
  c.antialias = antialias      # kornia Gaussian antialias before the bicubic resize (DynamiCrafter: True)
  c.resize = tuple(int(v) for v in resize)  # preprocessing target (H, W); DynamiCrafter hard-codes 224x224
  c.mean = tuple(float(v) for v in mean)    # per-channel mean after (x + 1) / 2 (OpenAI CLIP)
  c.std = tuple(float(v) for v in std)      # per-channel std (OpenAI CLIP)
  return c


def real_config(variant: str = "256") -> ml_collections.ConfigDict:
  """OpenCLIP ViT-H-14 vision tower; identical for DynamiCrafter's 256/512/1024 configs."""
  if str(variant) not in ("256", "512", "1024"):
    raise ValueError(f"unknown DynamiCrafter variant {variant!r}; want '256', '512' or '1024'")
  return make_config(width=1280, head_width=80, layers_=32, patch_size=14, image_size=224, antialias=True)


def config_from_torch_params(params: dict) -> ml_collections.ConfigDict:
  """Config from a ``clip_image`` fixture's ``config.json`` (``open_clip_model_cfg.vision_cfg``,
  ``params.antialias``) or from an open_clip model-config dict with ``vision_cfg``."""
  model_cfg = params.get("open_clip_model_cfg", params)
  if "vision_cfg" not in model_cfg:
    raise ValueError("config_from_torch_params: need 'open_clip_model_cfg' (fixture config.json) or an open_clip "
                     f"model config with 'vision_cfg'; got keys {sorted(params)}")
  v = model_cfg["vision_cfg"]
  extra = set(v) - {"head_width", "image_size", "layers", "patch_size", "width", "mlp_ratio"}
  if extra:
    raise ValueError(f"unsupported open_clip vision_cfg options {sorted(extra)} (not used by DynamiCrafter)")
  antialias = params.get("params", {}).get("antialias", True)
  pre = params.get("preprocess", {})
  if pre and (pre.get("interpolation", "bicubic") != "bicubic" or not pre.get("align_corners", True)):
    raise ValueError(f"only bicubic align_corners=True preprocessing is implemented, fixture says {pre}")
  return make_config(width=v["width"], head_width=v.get("head_width", 64), layers_=v["layers"],
                 patch_size=v["patch_size"], image_size=v["image_size"], mlp_ratio=v.get("mlp_ratio", 4.0),
                 antialias=pre.get("antialias", antialias), resize=pre.get("resize", (224, 224)),
                 mean=pre.get("mean", image_preprocess.CLIP_MEAN), std=pre.get("std", image_preprocess.CLIP_STD))


class VisionTransformer(nnx.Module):
  """open_clip ``VisionTransformer`` minus ``ln_post``/``proj`` (unused here)."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    w, p = cfg.width, cfg.patch_size
    self.grid = cfg.image_size // p
    self.patch = p
    self.conv1 = nnx.Conv(3, w, (p, p), strides=(p, p), padding="VALID", use_bias=False, rngs=rngs)
    scale = w ** -0.5
    self.class_embedding = nnx.Param(scale * jax.random.normal(rngs.params(), (w,), jnp.float32))
    self.positional_embedding = nnx.Param(
        scale * jax.random.normal(rngs.params(), (self.grid * self.grid + 1, w), jnp.float32))
    self.ln_pre = layers.LayerNorm(w, eps=cfg.ln_eps, rngs=rngs)
    self.transformer = clip_common.Transformer(w, cfg.layers, cfg.heads, cfg.mlp_ratio, cfg.ln_eps, rngs=rngs)

  def __call__(self, x, intermediates: dict | None = None):
    """``x``: preprocessed ``[B, S, S, 3]`` (S = image_size) -> ``[B, 1 + grid^2, W]``."""
    n_pos = self.positional_embedding.shape[0]
    if x.ndim != 4 or (x.shape[1] // self.patch) * (x.shape[2] // self.patch) + 1 != n_pos:
      raise ValueError(f"VisionTransformer: input {x.shape} gives a patch grid that does not match the "
                       f"{n_pos} positional embeddings (image_size {self.grid * self.patch})")
    x = self.conv1(x)  # [B, g, g, W]
    if intermediates is not None:
      intermediates["conv1/out"] = x
    b, gh, gw, w = x.shape
    x = x.reshape(b, gh * gw, w)  # row-major over the grid, as torch's flatten(2) of [B, W, g, g]
    cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (b, 1, w))
    x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...]
    x = self.ln_pre(x)
    if intermediates is not None:
      intermediates["ln_pre/out"] = x
    return self.transformer(x, None, intermediates=intermediates)


class ImageTower(nnx.Module):
  """Holds ``visual`` so parameter paths read ``model.visual.*`` like the checkpoint."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.visual = VisionTransformer(cfg, rngs=rngs)


class FrozenOpenCLIPImageEmbedderV2(nnx.Module):
  """``embedder``: images ``[B, H, W, 3]`` in [-1, 1] (any H, W) -> tokens ``[B, 257, W]`` float32."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.cfg = ml_collections.FrozenConfigDict(cfg)  # hashable, so graphdefs can be jit-static
    self.model = ImageTower(cfg, rngs=rngs)

  def preprocess(self, images: jax.Array, return_resized: bool = False):
    c = self.cfg
    resized = image_preprocess.kornia_resize(images, c.resize, c.antialias)
    out = image_preprocess.clip_normalize(resized, c.mean, c.std)
    return (out, resized) if return_resized else out

  def __call__(self, images: jax.Array, *, return_intermediates: bool = False):
    """With ``return_intermediates`` returns ``(out, dict)`` with ``resized``, ``preprocessed``,
    ``conv1/out`` (``[B, g, g, W]``), ``ln_pre/out`` and ``resblocks.{i}/out``."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [B, H, W, 3] in [-1, 1], got shape {images.shape}")
    x, resized = self.preprocess(images, return_resized=True)
    inter = {"resized": resized, "preprocessed": x} if return_intermediates else None
    out = self.model.visual(x, inter)
    return (out, inter) if return_intermediates else out


def build(cfg, *, rngs: nnx.Rngs) -> FrozenOpenCLIPImageEmbedderV2:
  return FrozenOpenCLIPImageEmbedderV2(cfg, rngs=rngs)


def torch_name_table(model: FrozenOpenCLIPImageEmbedderV2) -> list[torch_names.Entry]:
  """Entries for every parameter: auto (Conv/Linear/LayerNorm), ``in_proj_*``, class/positional embeddings."""
  table = torch_names.auto_entries(model, WEIGHTS_PREFIX)
  table += clip_common.attention_entries(model, WEIGHTS_PREFIX)
  for name in ("class_embedding", "positional_embedding"):
    table.append(torch_names.Entry(f"{WEIGHTS_PREFIX}model.visual.{name}", ("model", "visual", name)))
  return table
