"""DynamiCrafter's first-stage KL autoencoder (``lvdm.models.autoencoder.AutoencoderKL``) in Flax NNX.

The module tree mirrors the PyTorch names (``encoder.down.{i}.block.{j}.conv1``, ``encoder.mid.attn_1.q``,
``decoder.up.{i}.upsample.conv``, ``quant_conv``, ...), so :func:`torch_name_table` is :func:`auto_entries`.

Layouts (channels-last, float32):
  * images ``[B, H, W, 3]`` in ``[-1, 1]``;
  * latents ``[B, H / 2**(L-1), W / 2**(L-1), z_channels]`` with ``L = len(ch_mult)`` (x8 for the real model);
  * videos ``[B, T, H, W, C]``; the video helpers fold frames into the batch and run every frame separately
    (every layer here works per image, so this equals DynamiCrafter's ``perframe_ae`` loop).

Torch-exact details (``shared/notes/dynamicrafter_quirks.md``): GroupNorm(32, eps 1e-6), swish, Downsample pads
right/bottom by one pixel then applies a stride-2 3x3 conv without padding, Upsample is nearest x2 then a 3x3
conv, each mid block has one single-head AttnBlock (1x1 conv q/k/v/proj_out, scale ``C**-0.5``) even with
``attn_resolutions: []``. The posterior's logvar is clamped to [-30, 20]; latents fed to the diffusion model are
``scale_factor * sample`` (0.18215).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models import torch_names
from vid2world_jax.models import layers

WEIGHTS_PREFIX = "first_stage_model."
TORCH_ALIASES: dict[str, str] = {}
TORCH_IGNORE: list[str] = [
    # AutoencoderKL is built with lossconfig {target: torch.nn.Identity} in every DynamiCrafter config, so the
    # checkpoint has no ``first_stage_model.loss.*`` keys (the manifests confirm it). Listed in case a training
    # checkpoint with an LPIPS/discriminator loss is loaded: those weights are never used at inference.
    WEIGHTS_PREFIX + "loss.*",
]

NORM_EPS = 1e-6
NUM_GROUPS = 32
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


# ----------------------------------------------------------------------------------------------- config


def _base_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.in_channels = 3          # image channels in
  cfg.out_ch = 3               # image channels out
  cfg.ch = 128                 # base width
  cfg.ch_mult = (1, 2, 4, 4)   # width multiplier per resolution level (len-1 = number of x2 downsamplings)
  cfg.num_res_blocks = 2       # ResnetBlocks per encoder level (decoder levels have one more)
  cfg.attn_resolutions = ()    # resolutions (in pixels of ``resolution``) with extra AttnBlocks; [] in DC
  cfg.resolution = 256         # nominal image size; only used to place ``attn_resolutions``
  cfg.z_channels = 4           # latent channels of the encoder/decoder
  cfg.double_z = True          # encoder outputs mean and logvar (2*z_channels)
  cfg.embed_dim = 4            # latent channels after quant_conv (what the diffusion model sees)
  cfg.dropout = 0.0            # ResnetBlock dropout (0 in DC; inference is deterministic anyway)
  cfg.scale_factor = 0.18215   # latent scale used by encode_video/decode_video (LatentDiffusion.scale_factor)
  cfg.frames_per_chunk = 0     # video helpers: frames encoded/decoded per step (0 = all frames at once)
  return cfg


def config_from_torch_params(params: dict) -> ml_collections.ConfigDict:
  """Config from a fixture's ``config.json`` ``params`` (``{ddconfig: {...}, embed_dim, lossconfig}``)."""
  if "ddconfig" not in params or "embed_dim" not in params:
    raise ValueError(f"expected AutoencoderKL params with 'ddconfig' and 'embed_dim', got {sorted(params)}")
  dd = params["ddconfig"]
  cfg = _base_config()
  for k in ("in_channels", "out_ch", "ch", "num_res_blocks", "resolution", "z_channels", "double_z", "dropout"):
    if k in dd:
      setattr(cfg, k, type(getattr(cfg, k))(dd[k]))
  cfg.ch_mult = tuple(int(m) for m in dd["ch_mult"])
  cfg.attn_resolutions = tuple(int(r) for r in dd.get("attn_resolutions", ()))
  cfg.embed_dim = int(params["embed_dim"])
  if "scale_factor" in params:
    cfg.scale_factor = float(params["scale_factor"])
  return cfg


def real_config(variant: str = "256") -> ml_collections.ConfigDict:
  """The VAE of ``configs/inference_{256,512,1024}_v1.0.yaml`` (identical for all three; resolution 256)."""
  if str(variant) not in ("256", "512", "1024"):
    raise ValueError(f"variant must be '256', '512' or '1024', got {variant!r}")
  return _base_config()  # every YAML: ch 128, ch_mult [1,2,4,4], 2 res blocks, resolution 256, no attn


# ----------------------------------------------------------------------------------------------- layers


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, pad=None, rngs: nnx.Rngs) -> nnx.Conv:
  """torch ``Conv2d(cin, cout, k, stride, padding=k//2)`` on channels-last arrays (padding overridable)."""
  p = k // 2 if pad is None else pad
  padding = p if isinstance(p, str) else ((p, p), (p, p)) if isinstance(p, int) else p
  return nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=padding, rngs=rngs)


def _norm(c: int, *, rngs: nnx.Rngs) -> layers.GroupNorm:
  return layers.GroupNorm(c, NUM_GROUPS, NORM_EPS, rngs=rngs)


def swish(x):
  return x * jax.nn.sigmoid(x)


class ResnetBlock(nnx.Module):
  """norm1 -> swish -> conv1 -> norm2 -> swish -> (dropout) -> conv2, plus (nin_shortcut) skip. No temb."""

  def __init__(self, cin: int, cout: int, dropout: float = 0.0, *, rngs: nnx.Rngs):
    self.norm1 = _norm(cin, rngs=rngs)
    self.conv1 = _conv(cin, cout, 3, rngs=rngs)
    self.norm2 = _norm(cout, rngs=rngs)
    # torch.nn.Dropout slot (no parameters); DynamiCrafter uses 0.0 and runs the VAE in eval mode.
    self.dropout = layers.Dropout(dropout, rngs=rngs) if dropout > 0 else layers.Identity()
    self.conv2 = _conv(cout, cout, 3, rngs=rngs)
    self.nin_shortcut = _conv(cin, cout, 1, rngs=rngs) if cin != cout else None

  def __call__(self, x):
    h = self.conv1(swish(self.norm1(x)))
    h = self.conv2(self.dropout(swish(self.norm2(h))))
    if self.nin_shortcut is not None:
      x = self.nin_shortcut(x)
    return x + h


class AttnBlock(nnx.Module):
  """Single-head spatial self-attention over all ``H*W`` positions; q/k/v/proj_out are 1x1 convs."""

  def __init__(self, c: int, *, rngs: nnx.Rngs):
    self.norm = _norm(c, rngs=rngs)
    self.q = _conv(c, c, 1, rngs=rngs)
    self.k = _conv(c, c, 1, rngs=rngs)
    self.v = _conv(c, c, 1, rngs=rngs)
    self.proj_out = _conv(c, c, 1, rngs=rngs)

  def __call__(self, x):
    b, h, w, c = x.shape
    hn = self.norm(x)
    q = self.q(hn).reshape(b, h * w, c)
    k = self.k(hn).reshape(b, h * w, c)
    v = self.v(hn).reshape(b, h * w, c)
    logits = jnp.einsum("bic,bjc->bij", q, k) * (float(c) ** -0.5)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("bij,bjc->bic", weights, v).reshape(b, h, w, c)
    return x + self.proj_out(out)


class Downsample(nnx.Module):
  """Pad (left 0, right 1, top 0, bottom 1) with zeros, then 3x3 conv stride 2 without padding."""

  def __init__(self, c: int, *, rngs: nnx.Rngs):
    self.conv = _conv(c, c, 3, stride=2, pad=0, rngs=rngs)

  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest-neighbour x2 then 3x3 conv (padding 1)."""

  def __init__(self, c: int, *, rngs: nnx.Rngs):
    self.conv = _conv(c, c, 3, rngs=rngs)

  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return self.conv(x)


class Level(nnx.Module):
  """One resolution level: ``block`` (ResnetBlocks), ``attn`` (AttnBlocks, usually empty), optional resampler."""

  def __init__(self, blocks: list, attns: list, downsample=None, upsample=None):
    self.block = nnx.List(blocks)
    self.attn = nnx.List(attns)
    if downsample is not None:
      self.downsample = downsample
    if upsample is not None:
      self.upsample = upsample

  def __call__(self, h):
    for i, blk in enumerate(self.block):
      h = blk(h)
      if len(self.attn) > 0:
        h = self.attn[i](h)
    return h


class Mid(nnx.Module):
  def __init__(self, c: int, dropout: float, *, rngs: nnx.Rngs):
    self.block_1 = ResnetBlock(c, c, dropout, rngs=rngs)
    self.attn_1 = AttnBlock(c, rngs=rngs)
    self.block_2 = ResnetBlock(c, c, dropout, rngs=rngs)

  def __call__(self, h):
    return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nnx.Module):
  """``[B, H, W, in_channels]`` -> ``[B, H/2**(L-1), W/2**(L-1), 2*z_channels]`` (``z_channels`` if not double_z)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    ch, mult, nrb = cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks
    self.conv_in = _conv(cfg.in_channels, ch, 3, rngs=rngs)
    in_mult = (1,) + mult
    curr_res = cfg.resolution
    levels = []
    block_in = ch
    for i in range(len(mult)):
      block_in, block_out = ch * in_mult[i], ch * mult[i]
      blocks, attns = [], []
      for _ in range(nrb):
        blocks.append(ResnetBlock(block_in, block_out, cfg.dropout, rngs=rngs))
        block_in = block_out
        if curr_res in cfg.attn_resolutions:
          attns.append(AttnBlock(block_in, rngs=rngs))
      down = None
      if i != len(mult) - 1:
        down = Downsample(block_in, rngs=rngs)
        curr_res //= 2
      levels.append(Level(blocks, attns, downsample=down))
    self.down = nnx.List(levels)
    self.mid = Mid(block_in, cfg.dropout, rngs=rngs)
    self.norm_out = _norm(block_in, rngs=rngs)
    self.conv_out = _conv(block_in, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, rngs=rngs)

  def __call__(self, x):
    h = self.conv_in(x)
    for level in self.down:
      h = level(h)
      if hasattr(level, "downsample"):
        h = level.downsample(h)
    h = self.mid(h)
    return self.conv_out(swish(self.norm_out(h)))


class Decoder(nnx.Module):
  """``[B, h, w, z_channels]`` -> ``[B, h*2**(L-1), w*2**(L-1), out_ch]``.

  ``up[i]`` is resolution level ``i`` (as torch's ``up.insert(0, ...)``); they run from ``up[L-1]`` to ``up[0]``.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    ch, mult, nrb = cfg.ch, tuple(cfg.ch_mult), cfg.num_res_blocks
    n = len(mult)
    block_in = ch * mult[-1]
    curr_res = cfg.resolution // 2 ** (n - 1)
    self.conv_in = _conv(cfg.z_channels, block_in, 3, rngs=rngs)
    self.mid = Mid(block_in, cfg.dropout, rngs=rngs)
    levels: dict[int, Level] = {}
    for i in reversed(range(n)):
      block_out = ch * mult[i]
      blocks, attns = [], []
      for _ in range(nrb + 1):
        blocks.append(ResnetBlock(block_in, block_out, cfg.dropout, rngs=rngs))
        block_in = block_out
        if curr_res in cfg.attn_resolutions:
          attns.append(AttnBlock(block_in, rngs=rngs))
      up = None
      if i != 0:
        up = Upsample(block_in, rngs=rngs)
        curr_res *= 2
      levels[i] = Level(blocks, attns, upsample=up)
    self.up = nnx.List([levels[i] for i in range(n)])
    self.norm_out = _norm(block_in, rngs=rngs)
    self.conv_out = _conv(block_in, cfg.out_ch, 3, rngs=rngs)

  def __call__(self, z):
    h = self.mid(self.conv_in(z))
    for i in reversed(range(len(self.up))):
      level = self.up[i]
      h = level(h)
      if hasattr(level, "upsample"):
        h = level.upsample(h)
    return self.conv_out(swish(self.norm_out(h)))


class AutoencoderKL(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    if not cfg.double_z:
      raise ValueError("AutoencoderKL needs double_z=True (the posterior needs mean and logvar)")
    if cfg.ch % NUM_GROUPS:
      raise ValueError(f"ch={cfg.ch} must be a multiple of {NUM_GROUPS} (GroupNorm groups)")
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)
    self.quant_conv = _conv(2 * cfg.z_channels, 2 * cfg.embed_dim, 1, rngs=rngs)
    self.post_quant_conv = _conv(cfg.embed_dim, cfg.z_channels, 1, rngs=rngs)
    self.in_channels = int(cfg.in_channels)
    self.embed_dim = int(cfg.embed_dim)
    self.downscale = 2 ** (len(cfg.ch_mult) - 1)
    self.scale_factor = float(cfg.scale_factor)
    self.frames_per_chunk = int(cfg.frames_per_chunk)


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> AutoencoderKL:
  return AutoencoderKL(cfg, rngs=rngs)


def torch_name_table(model: AutoencoderKL) -> list[torch_names.Entry]:
  """Every parameter is a Conv or GroupNorm whose path mirrors the torch key."""
  return torch_names.auto_entries(model, WEIGHTS_PREFIX)


# ----------------------------------------------------------------------------------------------- functions


def _check_images(model: AutoencoderKL, x, name="x"):
  if x.ndim != 4 or x.shape[-1] != model.in_channels:
    raise ValueError(f"{name}: expected images [B, H, W, {model.in_channels}], got shape {x.shape}")


def _check_latents(model: AutoencoderKL, z, name="z"):
  if z.ndim != 4 or z.shape[-1] != model.embed_dim:
    raise ValueError(f"{name}: expected latents [B, h, w, {model.embed_dim}], got shape {z.shape}")


def encode_moments(model: AutoencoderKL, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Images ``[B, H, W, 3]`` in [-1, 1] -> (mean, logvar), each ``[B, H/f, W/f, embed_dim]``; logvar clamped."""
  _check_images(model, x)
  moments = model.quant_conv(model.encoder(x))
  mean, logvar = jnp.split(moments, 2, axis=-1)
  return mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)


def sample_posterior(mean: jax.Array, logvar: jax.Array, noise: jax.Array) -> jax.Array:
  """``mean + exp(0.5 * logvar) * noise`` (no scale factor); all three of the same shape."""
  if not (mean.shape == logvar.shape == noise.shape):
    raise ValueError(f"mean {mean.shape}, logvar {logvar.shape} and noise {noise.shape} must have one shape")
  return mean + jnp.exp(0.5 * logvar) * noise


def decode(model: AutoencoderKL, z: jax.Array) -> jax.Array:
  """Unscaled latents ``[B, h, w, embed_dim]`` -> images ``[B, h*f, w*f, out_ch]`` (not clipped)."""
  _check_latents(model, z)
  return model.decoder(model.post_quant_conv(z))


def _per_frame(model: AutoencoderKL, fn, *arrays):
  """Applies ``fn(*frames)`` to ``[N, ...]`` arrays, ``frames_per_chunk`` frames at a time (0: all at once)."""
  chunk = model.frames_per_chunk
  n = arrays[0].shape[0]
  if chunk <= 0 or chunk >= n:
    return fn(*arrays)
  # lax.map(batch_size=k) vmaps ``fn`` over k single frames at a time; each call sees one frame, as [1, ...].
  one = lambda xs: jax.tree.map(lambda o: o[0], fn(*(a[None] for a in xs)))  # noqa: E731
  return jax.lax.map(one, arrays, batch_size=chunk)


def _encoded_hw(model: AutoencoderKL, h: int, w: int) -> tuple[int, int]:
  """Latent (h, w): each Downsample (pad right/bottom by 1, 3x3 stride-2 conv) maps a size s to s // 2."""
  steps = model.downscale.bit_length() - 1
  for _ in range(steps):
    h, w = h // 2, w // 2
  return h, w


def _is_prng_key(x) -> bool:
  """New-style typed keys, or legacy ``uint32[2]`` keys (noise arrays are floating point)."""
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    return False
  return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (dtype == jnp.uint32 and tuple(x.shape) == (2,))


def encode_video(model: AutoencoderKL, frames: jax.Array, rng_or_noise) -> jax.Array:
  """Video ``[B, T, H, W, 3]`` in [-1, 1] -> scaled latents ``scale_factor * sample`` ``[B, T, h, w, embed_dim]``.

  ``rng_or_noise``: a PRNG key (Gaussian noise is drawn) or the noise itself, ``[B, T, h, w, embed_dim]``.
  Each frame is encoded on its own (frames folded into the batch, b outer, t inner).
  """
  if frames.ndim != 5 or frames.shape[-1] != model.in_channels:
    raise ValueError(f"frames: expected [B, T, H, W, {model.in_channels}], got shape {frames.shape}")
  b, t, h, w, c = frames.shape
  lat_shape = (b, t) + _encoded_hw(model, h, w) + (model.embed_dim,)
  if not _is_prng_key(rng_or_noise):
    noise = jnp.asarray(rng_or_noise)
    if noise.shape != lat_shape:
      raise ValueError(f"noise: expected shape {lat_shape} (the latent shape), got {noise.shape}")
  flat = frames.reshape(b * t, h, w, c)
  mean, logvar = _per_frame(model, lambda x: encode_moments(model, x), flat)
  if _is_prng_key(rng_or_noise):
    noise = jax.random.normal(rng_or_noise, lat_shape, mean.dtype)
  z = sample_posterior(mean, logvar, noise.reshape(mean.shape))
  return (model.scale_factor * z).reshape(lat_shape)


def encode_video_moments(model: AutoencoderKL, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Video ``[B, T, H, W, 3]`` -> posterior (mean, clamped logvar), each ``[B, T, h, w, embed_dim]`` (unscaled):
  what :func:`encode_video` samples from (``scale_factor * (mean + exp(logvar / 2) * noise)``)."""
  if frames.ndim != 5 or frames.shape[-1] != model.in_channels:
    raise ValueError(f"frames: expected [B, T, H, W, {model.in_channels}], got shape {frames.shape}")
  b, t = frames.shape[:2]
  mean, logvar = _per_frame(model, lambda x: encode_moments(model, x), frames.reshape((b * t,) + frames.shape[2:]))
  return mean.reshape((b, t) + mean.shape[1:]), logvar.reshape((b, t) + logvar.shape[1:])


def decode_video(model: AutoencoderKL, latents: jax.Array) -> jax.Array:
  """Scaled latents ``[B, T, h, w, embed_dim]`` -> frames ``[B, T, H, W, out_ch]`` (divides by scale_factor)."""
  if latents.ndim != 5 or latents.shape[-1] != model.embed_dim:
    raise ValueError(f"latents: expected [B, T, h, w, {model.embed_dim}], got shape {latents.shape}")
  b, t = latents.shape[:2]
  flat = latents.reshape((b * t,) + latents.shape[2:]) / model.scale_factor
  out = _per_frame(model, lambda z: decode(model, z), flat)
  return out.reshape((b, t) + out.shape[1:])


def latent_shape(model: AutoencoderKL, image_hw: Sequence[int]) -> tuple[int, int, int]:
  """Latent ``(h, w, embed_dim)`` of an ``(H, W)`` image (sizes divisible by the downscale factor)."""
  hh, ww = (int(s) for s in image_hw)
  f = model.downscale
  if hh % f or ww % f:
    raise ValueError(f"image size {(hh, ww)} must be divisible by {f}")
  return hh // f, ww // f, model.embed_dim


__all__ = ["AutoencoderKL", "build", "config_from_torch_params", "real_config", "torch_name_table",
           "encode_moments", "sample_posterior", "decode", "encode_video", "encode_video_moments", "decode_video", "WEIGHTS_PREFIX",
           "TORCH_ALIASES", "TORCH_IGNORE"]
