"""UNet building blocks: ResBlock (+ temporal conv), Downsample, Upsample and the block container.

Video tensors are ``[B, T, H, W, C]``; spatial layers fold frames into the batch (``[B*T, H, W, C]``), which is
what torch's ``(b t) c h w`` layout does. ``emb`` is per frame: ``[B, T, E]``.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from vid2world_jax.models import layers, remat
from vid2world_jax.models.attention import SpatialTransformer, TemporalTransformer
from vid2world_jax.models.frame_cache import FrameCache, child
from vid2world_jax.models.temporal import TemporalConvBlock


def conv2d(i: int, o: int, k: int = 3, stride: int = 1, *, dtype, rngs, padding=None) -> nnx.Conv:
  """``k x k`` conv, zero padding ``k // 2`` on every side unless ``padding`` ((top, bottom), (left, right))."""
  p = k // 2
  return nnx.Conv(i, o, kernel_size=(k, k), strides=(stride, stride), padding=padding or ((p, p), (p, p)),
                  dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


def fold(x):
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def unfold(x, b: int):
  return x.reshape((b, x.shape[0] // b) + x.shape[1:])


class ResBlock(nnx.Module):
  """torch ``ResBlock`` (no scale-shift norm, no up/down): ``skip(x) + out_layers(in_layers(x) + emb_layers(emb))``
  per frame, then ``temopral_conv`` (sic) over frames when ``use_temporal_conv``."""

  def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int, *,
               use_temporal_conv: bool, temporal_conv_padding: str = "symmetric", temporal_norm: str = "joint",
               dtype, rngs: nnx.Rngs):
    self.in_layers = layers.Seq([layers.GroupNorm(channels, 32, 1e-5, rngs=rngs), layers.SiLU(),
                                 conv2d(channels, out_channels, dtype=dtype, rngs=rngs)])
    self.emb_layers = layers.Seq([layers.SiLU(), nnx.Linear(emb_channels, out_channels, dtype=dtype,
                                                            param_dtype=jnp.float32, rngs=rngs)])
    self.out_layers = layers.Seq([layers.GroupNorm(out_channels, 32, 1e-5, rngs=rngs), layers.SiLU(),
                                  layers.Dropout(dropout, rngs=rngs),
                                  conv2d(out_channels, out_channels, dtype=dtype, rngs=rngs)])
    if out_channels == channels:
      self.skip_connection = layers.Identity()
    else:
      self.skip_connection = conv2d(channels, out_channels, 1, dtype=dtype, rngs=rngs)
    self.use_temporal_conv = use_temporal_conv
    if use_temporal_conv:
      self.temopral_conv = TemporalConvBlock(out_channels, out_channels, dropout=0.1,
                                             padding=temporal_conv_padding, norm=temporal_norm, dtype=dtype,
                                             rngs=rngs)

  def spatial(self, x, emb):
    """The frame-wise part (everything before the temporal conv): ``x [B, T, H, W, C]``, ``emb [B, T, E]``."""
    b = x.shape[0]
    xf = fold(x)
    h = self.in_layers(xf)
    h = h + fold(self.emb_layers(emb)).astype(h.dtype)[:, None, None, :]
    h = self.out_layers(h)
    return unfold(self.skip_connection(xf) + h, b)

  def __call__(self, x, emb, capture=None, name="", cache: FrameCache | None = None):
    """``x [B, T, H, W, C]``, ``emb [B, T, E]`` -> ``[B, T, H, W, C_out]``."""
    h = self.spatial(x, emb)
    if self.use_temporal_conv:
      if capture is not None:
        capture.setdefault(f"{name}.temopral_conv/in", h)
      h = self.temopral_conv(h, child(cache, "temopral_conv"))
    return h


class Downsample(nnx.Module):
  """Conv2d 3x3 stride 2 padding 1 (``op``), per frame."""

  def __init__(self, channels: int, out_channels: int, *, dtype, rngs):
    self.op = conv2d(channels, out_channels, 3, 2, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return unfold(self.op(fold(x)), x.shape[0])


class Upsample(nnx.Module):
  """Nearest x2 then Conv2d 3x3 (``conv``), per frame."""

  def __init__(self, channels: int, out_channels: int, *, dtype, rngs):
    self.conv = conv2d(channels, out_channels, 3, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    h = jnp.repeat(jnp.repeat(fold(x), 2, axis=1), 2, axis=2)
    return unfold(self.conv(h), x.shape[0])


def _call_res(layer, h, emb):
  return layer(h, emb)


def _call_spatial(layer, h, text, image):
  return layer(h, text, image)


def _call_temporal(layer, h):
  return layer(h)


class EmbedSeq(nnx.List):
  """torch ``TimestepEmbedSequential``: calls each layer with what it needs (index i == torch index i)."""

  def __call__(self, h, emb, ctx, capture=None, name="", policies=None, cache: FrameCache | None = None):
    """``h [B, T, H, W, C]``, ``emb [B, T, E]``, ``ctx = (text [B,1,Lt,D], image [B,T|1,Li,D] | None)``;
    ``policies``: ``{"resblock" | "spatial" | "temporal": remat policy name}`` (models/remat.py);
    ``cache``: this block's scope of a frame cache (passed to the temporal layers; no remat with a cache)."""
    b = h.shape[0]
    pol = policies or {}
    for i, layer in enumerate(self):
      if isinstance(layer, ResBlock):
        if cache is not None or pol.get("resblock", "none") == "none":
          h = layer(h, emb, capture, f"{name}.{i}", child(cache, str(i)))
        else:
          h = remat.wrap(_call_res, pol["resblock"])(layer, h, emb)
      elif isinstance(layer, SpatialTransformer):
        h = remat.wrap(_call_spatial, pol.get("spatial", "none"))(layer, h, *ctx)
      elif isinstance(layer, TemporalTransformer):
        if cache is not None:
          h = layer(h, child(cache, str(i)))
        else:
          h = remat.wrap(_call_temporal, pol.get("temporal", "none"))(layer, h)
      elif isinstance(layer, (Downsample, Upsample)):
        h = layer(h)
      elif isinstance(layer, nnx.Conv):  # input_blocks.0.0, per frame
        h = unfold(layer(fold(h)), b)
      else:
        raise TypeError(f"unexpected layer {type(layer).__name__} in {name}")
      if capture is not None:
        capture.setdefault(f"{name}.{i}/out", h)
    if capture is not None:
      capture.setdefault(f"{name}/out", h)
    return h
