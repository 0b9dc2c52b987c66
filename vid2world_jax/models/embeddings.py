"""Timestep / fps sinusoidal embedding and the Vid2World action encoders (UNet conditioning)."""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from vid2world_jax.models import layers


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """DynamiCrafter's sinusoidal embedding, **cos half first**, computed in float32.

  ``t``: any shape ``[*S]`` (int or float steps). Returns ``[*S, dim]`` float32.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = jnp.asarray(t).astype(jnp.float32)[..., None] * freqs
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros(emb.shape[:-1] + (1,), emb.dtype)], axis=-1)
  return emb


def mlp_embed(in_dim: int, dim: int, *, dtype, rngs: nnx.Rngs) -> layers.Seq:
  """``Linear(in, dim) -> SiLU -> Linear(dim, dim)`` (torch ``time_embed`` / ``fps_embedding``)."""
  return layers.Seq([
      nnx.Linear(in_dim, dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs),
      layers.SiLU(),
      nnx.Linear(dim, dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs),
  ])


def action_encoder(kind: str, action_dim: int, model_channels: int, emb_dim: int, *, dtype,
                   rngs: nnx.Rngs) -> layers.Seq:
  """Vid2World action encoder (spec section 4), maps ``[..., A]`` -> ``[..., emb_dim]``.

  * ``"mlp"`` (continuous actions): ``Linear(A, mc) -> SiLU -> Linear(mc, 4mc) -> SiLU -> Linear(4mc, 4mc)``.
  * ``"embedding"`` (multi-/one-hot actions): index 0 is a bias-free ``Linear(A, mc)`` whose kernel ``[A, mc]``
    IS the embedding table (``a @ E`` = sum of the rows of the active entries), then
    ``Linear(mc, 4mc) -> SiLU -> Linear(4mc, 4mc)``.
  """
  lin = lambda i, o, bias=True: nnx.Linear(i, o, use_bias=bias, dtype=dtype, param_dtype=jnp.float32,
                                           rngs=rngs)
  if kind == "mlp":
    return layers.Seq([lin(action_dim, model_channels), layers.SiLU(), lin(model_channels, emb_dim),
                       layers.SiLU(), lin(emb_dim, emb_dim)])
  if kind == "embedding":
    return layers.Seq([lin(action_dim, model_channels, bias=False), lin(model_channels, emb_dim),
                       layers.SiLU(), lin(emb_dim, emb_dim)])
  raise ValueError(f"action_encoder must be 'mlp' or 'embedding', got {kind!r}")
