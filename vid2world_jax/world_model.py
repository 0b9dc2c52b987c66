"""The trainable bundle (UNet + trainable conditioning) and the frozen first stage / encoders.

Trainable (``WorldModel``, the only thing the optimizer sees):
  * ``unet``: the causal, action-conditioned video UNet (``vid2world_jax.models.unet``), or ``toy`` (a small
    causal conv denoiser with the same call signature, for fast tests of the training machinery);
  * ``null_context`` ``[L, D]`` (context "learned_null": tiny configs without CLIP), or ``resampler``
    (context "resampler": CLIP image tokens of the conditioning frame -> 16 tokens, trainable as in Vid2World).

Frozen (``FrozenStage``): the first stage (``vae`` = AutoencoderKL, or ``patchify`` = exact invertible
space-to-depth by p, no parameters) and, for the resampler context, the CLIP image encoder and the constant
text context of the empty prompt (``text_context`` ``[77, 1024]``, filled by ``init_from``).
Array layouts: video ``[B, T, H, W, C]``, images ``[B, H, W, C]``, contexts ``[B, L, D]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx


# ------------------------------------------------------------------------------------------------------------
# First stage.

def patchify(frames: jax.Array, p: int) -> jax.Array:
  """``[..., H, W, C]`` -> ``[..., H/p, W/p, C*p*p]`` (exact space-to-depth)."""
  *lead, h, w, c = frames.shape
  if h % p or w % p:
    raise ValueError(f"patchify: frame size {(h, w)} not divisible by patch size {p}")
  x = frames.reshape(*lead, h // p, p, w // p, p, c)
  n = len(lead)
  x = jnp.moveaxis(x, n + 1, n + 2)  # [..., h/p, w/p, p(h), p(w), c]
  return x.reshape(*lead, h // p, w // p, p * p * c)


def unpatchify(latents: jax.Array, p: int, channels: int = 3) -> jax.Array:
  """Inverse of :func:`patchify`."""
  *lead, hh, ww, cc = latents.shape
  if cc != p * p * channels:
    raise ValueError(f"unpatchify: {cc} channels != p*p*{channels} with p={p}")
  n = len(lead)
  x = latents.reshape(*lead, hh, ww, p, p, channels)
  x = jnp.moveaxis(x, n + 2, n + 1)  # [..., hh, p, ww, p, c]
  return x.reshape(*lead, hh * p, ww * p, channels)


def model_config(cfg) -> ml_collections.ConfigDict:
  """THE resolution of a run config into the model config (training, inference, the demo and the tools all call
  this one): ``cfg.model`` with the run's global switches written into the UNet config: compute dtype
  (``precision``), remat (``remat`` / ``remat_policy``), ``attention_impl`` and the activation sharding rules
  (``mesh.activation_rules``; a no-op without a mesh). Configs read back from a checkpoint may lack a switch: its
  model default is kept."""
  m = ml_collections.ConfigDict(cfg.model.to_dict())
  m.unet.dtype = cfg.get("precision", m.unet.get("dtype", "float32"))
  m.unet.remat = bool(cfg.get("remat", False))
  for kind, policy in (cfg.get("remat_policy") or {}).items():
    m.unet[f"remat_{kind}"] = policy
  m.unet.attention_impl = cfg.get("attention_impl", m.unet.get("attention_impl", "auto"))
  mesh = cfg.get("mesh") or {}
  m.unet.activation_rules = tuple(tuple(r) for r in mesh.get("activation_rules", ()))
  return m


def latent_channels(cfg: ml_collections.ConfigDict) -> int:
  if cfg.first_stage == "patchify":
    return 3 * cfg.patch_size ** 2
  if cfg.first_stage == "vae":
    return 4
  raise ValueError(f"model.first_stage must be 'vae' or 'patchify', got {cfg.first_stage!r}")


def latent_hw(cfg: ml_collections.ConfigDict, hw) -> tuple[int, int]:
  f = cfg.patch_size if cfg.first_stage == "patchify" else 8
  h, w = (int(s) for s in hw)
  if h % f or w % f:
    raise ValueError(f"data.resolution {(h, w)} must be divisible by the first-stage factor {f}")
  return h // f, w // f


class FrozenStage(nnx.Module):
  """Frozen parts: VAE (if any), CLIP image encoder and empty-prompt text context (resampler context).

  ``encoders=False`` (training from precomputed latents, ``data.source="latents"``): no VAE and no CLIP image
  encoder are built; only the constants the step still needs (the empty-prompt text context) are kept, and the
  step samples latents from the batch's ``latent_moments`` with :meth:`latents_from_moments`.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, encoders: bool = True):
    self.first_stage = cfg.first_stage
    self.patch_size = int(cfg.patch_size)
    self.latent_scale = float(cfg.latent_scale)
    self.context_kind = cfg.context
    self.has_encoders = bool(encoders)
    self.latent_channels = latent_channels(cfg)  # validates first_stage
    if cfg.first_stage == "vae":
      from vid2world_jax.models import vae
      vcfg = component_config(cfg, "vae")
      self.vae_scale = float(vcfg.scale_factor)
      if encoders:
        self.vae = vae.build(vcfg, rngs=rngs)
    if cfg.context == "resampler":
      if encoders:
        from vid2world_jax.models import clip_image
        self.clip_image = clip_image.build(component_config(cfg, "clip_image"), rngs=rngs)
      self.text_context = nnx.Variable(jnp.zeros((77, int(cfg.unet.context_dim)), jnp.float32))

  def _need_encoders(self, what: str):
    if not self.has_encoders:
      raise ValueError(f"{what} needs the frozen encoders, but this FrozenStage was built without them "
                       "(encoders=False: training from precomputed latents)")

  def encode(self, frames: jax.Array, rng: jax.Array) -> jax.Array:
    """``[B, T, H, W, 3]`` in [-1, 1] -> latents ``[B, T, h, w, c]``."""
    if self.first_stage == "patchify":
      return patchify(frames, self.patch_size) * self.latent_scale
    self._need_encoders("encode")
    from vid2world_jax.models import vae
    return vae.encode_video(self.vae, frames, rng)

  def encode_moments(self, frames: jax.Array) -> jax.Array:
    """``[B, T, H, W, 3]`` -> ``latent_moments``: VAE ``concat(mean, logvar)`` ``[B, T, h, w, 2c]`` (unscaled,
    logvar clamped), or for patchify the deterministic latents ``[B, T, h, w, c]``."""
    if self.first_stage == "patchify":
      return self.encode(frames, None)
    self._need_encoders("encode_moments")
    from vid2world_jax.models import vae
    return jnp.concatenate(vae.encode_video_moments(self.vae, frames), axis=-1)

  def latents_from_moments(self, moments: jax.Array, rng: jax.Array) -> jax.Array:
    """``latent_moments`` (see :meth:`encode_moments`) -> latents, exactly as :meth:`encode` of the frames
    with the same ``rng`` (the posterior noise is drawn with the same key and shape)."""
    c = self.latent_channels
    if self.first_stage == "patchify":
      if moments.ndim != 5 or moments.shape[-1] != c:
        raise ValueError(f"latent_moments: expected [B, T, h, w, {c}] (patchify), got {moments.shape}")
      return moments
    if moments.ndim != 5 or moments.shape[-1] != 2 * c:
      raise ValueError(f"latent_moments: expected [B, T, h, w, {2 * c}] (VAE mean, logvar), got {moments.shape}")
    from vid2world_jax.models import vae
    mean, logvar = moments[..., :c], moments[..., c:]
    noise = jax.random.normal(rng, mean.shape, mean.dtype)
    return self.vae_scale * vae.sample_posterior(mean, logvar, noise)

  def image_tokens(self, cond_frame: jax.Array) -> jax.Array:
    """Frozen CLIP image tokens ``[B, N, W]`` of conditioning frames ``[B, H, W, 3]`` (resampler context)."""
    self._need_encoders("image_tokens")
    return self.clip_image(cond_frame)

  def decode(self, latents: jax.Array) -> jax.Array:
    if self.first_stage == "patchify":
      return unpatchify(latents / self.latent_scale, self.patch_size)
    self._need_encoders("decode")
    from vid2world_jax.models import vae
    return vae.decode_video(self.vae, latents)


def _component_variant(cfg) -> str:
  v = str(cfg.variant)
  if v not in ("256", "512", "1024", "tiny"):
    raise ValueError(f"model.variant must be '256', '512', '1024' (or 'tiny' for tests) with a VAE / resampler, "
                     f"got {v!r}")
  return v


def image_token_shape(cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """``(N, W)`` of the frozen CLIP image tokens (batch key ``clip_image_tokens``) of the resampler context."""
  c = component_config(cfg, "clip_image")
  return (c.image_size // c.patch_size) ** 2 + 1, int(c.width)


def latent_moments_channels(cfg: ml_collections.ConfigDict) -> int:
  """Channels of the batch key ``latent_moments``: VAE 2c (mean, logvar), patchify c (the latents)."""
  c = latent_channels(cfg)
  return 2 * c if cfg.first_stage == "vae" else c


def component_config(cfg: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Config of a frozen / conditioning component ("vae" | "clip_image" | "resampler") for ``cfg.variant``;
  "tiny": the same architectures at toy width (fast tests of the VAE + resampler paths, e.g. latents)."""
  variant = _component_variant(cfg)
  if name == "vae":
    from vid2world_jax.models import vae
    c = vae.real_config("256" if variant == "tiny" else variant)
    if variant == "tiny":
      c.ch, c.ch_mult, c.num_res_blocks = 32, (1, 1, 1, 1), 1   # still 3 x2 downsamplings (factor 8)
    return c
  if name == "clip_image":
    from vid2world_jax.models import clip_image
    if variant == "tiny":
      return clip_image.make_config(width=32, head_width=16, layers_=1, patch_size=14, image_size=28,
                                    antialias=True, resize=(28, 28))
    return clip_image.real_config(variant)
  if name == "resampler":
    from vid2world_jax.models import resampler
    c = resampler.real_config("256" if variant == "tiny" else variant)
    if variant == "tiny":
      c.update(dict(dim=32, depth=1, dim_head=16, heads=2, num_queries=2, embedding_dim=32,
                    output_dim=int(cfg.unet.context_dim), video_length=int(cfg.unet.temporal_length)))
    return c
  raise ValueError(f"unknown component {name!r}")


# ------------------------------------------------------------------------------------------------------------
# The model input.

def unet_denoise(model, x_t, t, cond: dict, actions=None, action_mask=None, cache=None):
  """UNet prediction for noisy latents: builds the DynamiCrafter hybrid input (the noisy latent concatenated on
  channels with the first-frame latent repeated over T) and calls the UNet. The one model-input builder
  (``WorldModel.denoise``, the trainer and every rollout go through it).

  Args:
    model: a :class:`vid2world_jax.models.unet.UNet` (``in_channels == 2 * latent channels``).
    x_t: ``[B, T, H, W, C]`` noisy latents (C = 4).
    t: ``[B]`` (one step per clip) or ``[B, T]`` (per-frame steps), int.
    cond: ``{"concat": [B, H, W, C] first-frame latent, "context": [B, L, D] cross-attention tokens,
      "fs": [B] int or None (None -> the model's ``default_fs``)}``.
    actions: ``[B, T, A]`` already aligned (``actions[:, k]`` conditions frame k) or None.
    action_mask: ``[B, T]`` (1 keep / 0 drop) or None (keep all).
    cache: a ``models.frame_cache.FrameCache`` (the cached rollout's fill / step forward) or None.
  Returns:
    ``[B, T, H, W, out_channels]`` float32.
  """
  x_t = jnp.asarray(x_t)
  if x_t.ndim != 5:
    raise ValueError(f"x_t must be [B, T, H, W, C], got shape {x_t.shape}")
  b, nt, h, w, c = x_t.shape
  if not isinstance(cond, dict):
    raise ValueError(f"cond must be a dict with 'concat', 'context' and 'fs', got {type(cond).__name__}")
  missing = {"concat", "context"} - set(cond)
  if missing:
    raise ValueError(f"cond lacks {sorted(missing)}")
  unknown = set(cond) - {"concat", "context", "fs"}
  if unknown:
    raise ValueError(f"cond has unknown entries {sorted(unknown)}")
  concat = jnp.asarray(cond["concat"])
  if concat.ndim != 4 or concat.shape[0] != b or concat.shape[1:3] != (h, w):
    raise ValueError(f"cond['concat'] must be [B, H, W, C']=[{b}, {h}, {w}, C'], got {concat.shape}")
  in_ch = model.cfg["in_channels"]
  if c + concat.shape[-1] != in_ch:
    raise ValueError(f"x_t channels {c} + concat channels {concat.shape[-1]} != UNet in_channels {in_ch}")
  context = jnp.asarray(cond["context"])
  if context.ndim != 3 or context.shape[0] != b:
    raise ValueError(f"cond['context'] must be [B={b}, L, D], got {context.shape}")
  t = jnp.asarray(t)
  if t.shape not in ((b,), (b, nt)):
    raise ValueError(f"t must be [B]=({b},) or [B, T]=({b}, {nt}), got {t.shape}")
  fs = cond.get("fs")
  if fs is not None:
    fs = jnp.asarray(fs)
    if fs.shape != (b,):
      raise ValueError(f"cond['fs'] must be [B]=({b},) or None, got {fs.shape}")
  rep = jnp.broadcast_to(concat[:, None].astype(x_t.dtype), (b, nt, h, w, concat.shape[-1]))
  x = jnp.concatenate([x_t, rep], axis=-1)
  return model(x, t, context, fs=fs, actions=actions, action_mask=action_mask, cache=cache)


# ------------------------------------------------------------------------------------------------------------
# Toy denoiser (fast CPU tests of the trainer; same call signature as WorldModel.denoise).

def _sinusoidal(t: jax.Array, dim: int) -> jax.Array:
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class ToyDenoiser(nnx.Module):
  """Causal in time: per-frame time + masked action embedding, temporal convs padded on the past only."""

  def __init__(self, ucfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    ch, cin, cout = int(ucfg.model_channels), int(ucfg.in_channels), int(ucfg.out_channels)
    self.ch = ch
    self.dtype = jnp.dtype(ucfg.dtype)
    self.time_embed = nnx.Linear(ch, ch, rngs=rngs)
    self.action_embed = nnx.Linear(max(1, int(ucfg.action_dim)), ch, rngs=rngs)
    self.context_proj = nnx.Linear(int(ucfg.context_dim), ch, rngs=rngs)
    self.conv_in = nnx.Conv(cin, ch, (1, 3, 3), padding=((0, 0), (1, 1), (1, 1)), rngs=rngs)
    self.convs = nnx.List([nnx.Conv(ch, ch, (2, 3, 3), padding=((1, 0), (1, 1), (1, 1)), rngs=rngs)
                           for _ in range(2)])
    self.conv_out = nnx.Conv(ch, cout, (1, 3, 3), padding=((0, 0), (1, 1), (1, 1)), rngs=rngs)

  def __call__(self, x_t, t, cond, actions, action_mask):
    b, tt = x_t.shape[:2]
    concat = jnp.broadcast_to(cond["concat"][:, None], (b, tt) + cond["concat"].shape[1:])
    h = self.conv_in(jnp.concatenate([x_t, concat.astype(x_t.dtype)], axis=-1))
    emb = self.time_embed(_sinusoidal(t, self.ch).astype(h.dtype))
    if actions is not None:
      a = self.action_embed(actions.astype(h.dtype))
      emb = emb + a * action_mask[..., None].astype(h.dtype)
    emb = emb + self.context_proj(cond["context"].astype(h.dtype)).mean(axis=1)[:, None]
    h = h + emb[:, :, None, None, :]
    for conv in self.convs:
      h = h + conv(jax.nn.silu(h))
    return self.conv_out(jax.nn.silu(h))


# ------------------------------------------------------------------------------------------------------------
# Trainable bundle.

class WorldModel(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    ucfg = cfg.unet
    self.arch = cfg.arch
    self.context_kind = cfg.context
    if cfg.arch == "unet":
      from vid2world_jax.models import unet
      self.unet = unet.build(ucfg, rngs=rngs)
    elif cfg.arch == "toy":
      self.unet = ToyDenoiser(ucfg, rngs=rngs)
    else:
      raise ValueError(f"model.arch must be 'unet' or 'toy', got {cfg.arch!r}")
    if cfg.context == "learned_null":
      self.null_context = nnx.Param(
          0.02 * jax.random.normal(rngs.params(), (int(cfg.context_len), int(ucfg.context_dim)), jnp.float32))
    elif cfg.context == "resampler":
      from vid2world_jax.models import resampler
      self.resampler = resampler.build(component_config(cfg, "resampler"), rngs=rngs)
    else:
      raise ValueError(f"model.context must be 'learned_null' or 'resampler', got {cfg.context!r}")
    self.fps = int(cfg.fps) if ucfg.get("fs_condition", False) else None

  def context(self, frozen: FrozenStage, cond_frame: jax.Array) -> jax.Array:
    """Cross-attention context ``[B, L, D]`` for conditioning frames ``[B, H, W, 3]``."""
    tokens = None if self.context_kind == "learned_null" else frozen.image_tokens(cond_frame)
    return self.context_from_tokens(frozen, tokens, cond_frame.shape[0])

  def context_from_tokens(self, frozen: FrozenStage, img_tokens: jax.Array | None, batch: int) -> jax.Array:
    """Context from precomputed frozen CLIP image tokens ``[B, N, W]`` (None for the learned null context)."""
    if self.context_kind == "learned_null":
      ctx = self.null_context[...]
      return jnp.broadcast_to(ctx[None], (batch,) + ctx.shape)
    if img_tokens is None:
      raise ValueError("the resampler context needs CLIP image tokens (batch key 'clip_image_tokens')")
    b = img_tokens.shape[0]
    img = self.resampler(jax.lax.stop_gradient(img_tokens))  # frozen encoder output: no gradient into it
    txt = jnp.broadcast_to(frozen.text_context[...][None], (b,) + frozen.text_context.shape).astype(img.dtype)
    return jnp.concatenate([txt, img], axis=1)

  def denoise(self, x_t, t, cond, actions, action_mask, cache=None):
    """``x_t [B,T,h,w,c]``, ``t [B,T]`` int, ``cond`` {"concat" [B,h,w,c], "context" [B,L,D]},
    ``actions [B,T,A]`` (already aligned), ``action_mask [B,T]`` -> prediction ``[B,T,h,w,c]`` float32.
    ``cache``: a ``models.frame_cache.FrameCache`` for the cached rollout (``arch="unet"`` only)."""
    if self.arch == "toy":
      if cache is not None:
        raise ValueError("the frame cache needs arch='unet'")
      return self.unet(x_t, t, cond, actions, action_mask)
    fs = None if self.fps is None else jnp.full((x_t.shape[0],), self.fps, jnp.int32)
    return unet_denoise(self.unet, x_t, t, {"concat": cond["concat"], "context": cond["context"], "fs": fs},
                        actions, action_mask, cache=cache)


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs, encoders: bool = True
          ) -> tuple[WorldModel, FrozenStage]:
  """``(trainable WorldModel, FrozenStage)`` from ``config.model``; ``encoders=False``: the FrozenStage holds
  no VAE / CLIP image encoder (training from precomputed latents)."""
  from vid2world_jax.models import tracing
  with tracing.cheap_tracer_errors():  # construction under eval_shape/jit is otherwise quadratic (models/tracing.py)
    return WorldModel(cfg, rngs=rngs), FrozenStage(cfg, rngs=rngs, encoders=encoders)
