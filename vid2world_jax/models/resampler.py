"""DynamiCrafter's image-token Resampler (``lvdm.modules.encoders.resampler.Resampler``) in Flax NNX.

A Perceiver resampler: ``num_queries * video_length`` learned latent tokens cross-attend to the image tokens
(OpenCLIP ViT-H/14 visual transformer output, ``[B, 257, 1280]`` in the real model) and become the image part
of the UNet's cross-attention context, ``[B, num_queries * video_length, output_dim]``. Output tokens are
frame-major: frame ``f`` owns tokens ``num_queries*f .. num_queries*(f+1)-1``.

Module tree (mirrors the torch keys under ``image_proj_model.``): ``latents`` ``[1, Q*T, dim]``, ``proj_in``,
``layers.{i}.0`` (PerceiverAttention: ``norm1``, ``norm2``, ``to_q``, ``to_kv``, ``to_out``, no biases),
``layers.{i}.1`` (FeedForward ``Seq(LayerNorm, Linear, GELU, Linear)``, no biases), ``proj_out``, ``norm_out``.

Numerics as in torch: q and k are each multiplied by ``dim_head**-0.25``, softmax in float32, LayerNorm eps 1e-5,
exact (erf) GELU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models import torch_names
from vid2world_jax.models import layers

WEIGHTS_PREFIX = "image_proj_model."
TORCH_ALIASES: dict[str, str] = {}
TORCH_IGNORE: list[str] = []  # every image_proj_model.* key of the real checkpoint is used


def _base_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.dim = 1024             # width of the latent tokens
  cfg.depth = 4              # number of (PerceiverAttention, FeedForward) layers
  cfg.dim_head = 64          # attention head width
  cfg.heads = 12             # attention heads (heads*dim_head need not equal dim)
  cfg.num_queries = 16       # latent tokens per frame
  cfg.embedding_dim = 1280   # width of the input image tokens (OpenCLIP ViT-H/14 width)
  cfg.output_dim = 1024      # width of the output tokens (UNet context_dim)
  cfg.ff_mult = 4            # FeedForward hidden width = ff_mult * dim
  cfg.video_length = 16      # frames; latents = num_queries * video_length tokens (None/0 in torch: 1 frame)
  return cfg


def config_from_torch_params(params: dict) -> ml_collections.ConfigDict:
  """Config from a fixture's ``config.json`` ``params`` (the Resampler constructor kwargs)."""
  cfg = _base_config()
  unknown = set(params) - set(cfg.keys())
  if unknown:
    raise ValueError(f"unknown Resampler params {sorted(unknown)}")
  for k, v in params.items():
    if k == "video_length" and v is None:
      v = 1  # torch: video_length=None keeps num_queries latents, the same as one frame
    setattr(cfg, k, type(getattr(cfg, k))(v))
  return cfg


def real_config(variant: str = "256") -> ml_collections.ConfigDict:
  """``image_proj_stage_config`` of ``configs/inference_{256,512,1024}_v1.0.yaml`` (identical in all three)."""
  if str(variant) not in ("256", "512", "1024"):
    raise ValueError(f"variant must be '256', '512' or '1024', got {variant!r}")
  return _base_config()


class PerceiverAttention(nnx.Module):
  """Latents attend to ``concat([x, latents])``; k and v come from one ``to_kv`` Linear (k first)."""

  def __init__(self, dim: int, dim_head: int, heads: int, *, rngs: nnx.Rngs):
    inner = dim_head * heads
    self.dim_head, self.heads = dim_head, heads
    self.norm1 = layers.LayerNorm(dim, rngs=rngs)
    self.norm2 = layers.LayerNorm(dim, rngs=rngs)
    self.to_q = nnx.Linear(dim, inner, use_bias=False, rngs=rngs)
    self.to_kv = nnx.Linear(dim, 2 * inner, use_bias=False, rngs=rngs)
    self.to_out = nnx.Linear(inner, dim, use_bias=False, rngs=rngs)

  def __call__(self, x, latents):
    """``x`` ``[B, N, dim]``, ``latents`` ``[B, L, dim]`` -> ``[B, L, dim]`` (the residual is added outside)."""
    b, l, _ = latents.shape
    x = self.norm1(x)
    latents = self.norm2(latents)
    q = self.to_q(latents)
    k, v = jnp.split(self.to_kv(jnp.concatenate([x, latents], axis=1)), 2, axis=-1)
    heads = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, self.dim_head)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    scale = float(self.dim_head) ** -0.25
    logits = jnp.einsum("bqhd,bkhd->bhqk", q * scale, k * scale)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(logits.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, l, self.heads * self.dim_head)
    return self.to_out(out)


def feed_forward(dim: int, mult: int, *, rngs: nnx.Rngs) -> layers.Seq:
  """torch ``Sequential(LayerNorm, Linear(no bias), GELU, Linear(no bias))``."""
  inner = int(dim * mult)
  return layers.Seq([
      layers.LayerNorm(dim, rngs=rngs),
      nnx.Linear(dim, inner, use_bias=False, rngs=rngs),
      layers.GELU(),
      nnx.Linear(inner, dim, use_bias=False, rngs=rngs),
  ])


class Resampler(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    for k in ("dim", "depth", "dim_head", "heads", "num_queries", "embedding_dim", "output_dim", "video_length"):
      if int(cfg[k]) <= 0:
        raise ValueError(f"Resampler config {k} must be positive, got {cfg[k]}")
    n_lat = cfg.num_queries * cfg.video_length
    self.embedding_dim = int(cfg.embedding_dim)
    self.latents = nnx.Param(jax.random.normal(rngs.params(), (1, n_lat, cfg.dim), jnp.float32)
                             / cfg.dim ** 0.5)
    self.proj_in = nnx.Linear(cfg.embedding_dim, cfg.dim, rngs=rngs)
    self.proj_out = nnx.Linear(cfg.dim, cfg.output_dim, rngs=rngs)
    self.norm_out = layers.LayerNorm(cfg.output_dim, rngs=rngs)
    self.layers = nnx.List([
        nnx.List([PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads, rngs=rngs),
                  feed_forward(cfg.dim, cfg.ff_mult, rngs=rngs)])
        for _ in range(cfg.depth)])

  def __call__(self, x: jax.Array) -> jax.Array:
    """Image tokens ``[B, N, embedding_dim]`` -> ``[B, num_queries*video_length, output_dim]``."""
    if x.ndim != 3 or x.shape[-1] != self.embedding_dim:
      raise ValueError(f"Resampler input: expected [B, N, {self.embedding_dim}], got shape {x.shape}")
    latents = jnp.broadcast_to(self.latents[...], (x.shape[0],) + self.latents.shape[1:]).astype(x.dtype)
    x = self.proj_in(x)
    for attn, ff in self.layers:
      latents = attn(x, latents) + latents
      latents = ff(latents) + latents
    return self.norm_out(self.proj_out(latents))


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Resampler:
  return Resampler(cfg, rngs=rngs)


def torch_name_table(model: Resampler) -> list[torch_names.Entry]:
  """Linears/LayerNorms by path, plus the free-standing ``latents`` parameter."""
  return torch_names.auto_entries(model, WEIGHTS_PREFIX) + [torch_names.Entry(WEIGHTS_PREFIX + "latents", ("latents",))]


__all__ = ["Resampler", "PerceiverAttention", "build", "config_from_torch_params", "real_config",
           "torch_name_table", "WEIGHTS_PREFIX", "TORCH_ALIASES", "TORCH_IGNORE"]
