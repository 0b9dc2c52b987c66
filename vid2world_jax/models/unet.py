"""DynamiCrafter 3D UNet (``lvdm.modules.networks.openaimodel3d.UNetModel``) in Flax NNX, channels-last, with
the Vid2World extensions: per-frame timesteps, action conditioning and causal options.

Parameter paths mirror the torch module tree (``input_blocks.1.0.temopral_conv.conv1.2`` etc.), so
:func:`torch_name_table` is :func:`auto_entries` plus the free-standing ``alpha`` gates.

Call: ``UNet(cfg)(x [B,T,H,W,Cin], timesteps [B] | [B,T], context [B,L,D], fs [B] | None, actions [B,T,A],
action_mask [B,T])`` -> ``[B,T,H,W,Cout]`` float32. Defaults of the new config fields reproduce DynamiCrafter.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from vid2world_jax.models import torch_names
from vid2world_jax import sharding
from vid2world_jax.models import layers, remat, tracing
from vid2world_jax.models.attention import SpatialTransformer, TemporalTransformer
from vid2world_jax.models.embeddings import action_encoder, mlp_embed, timestep_embedding
from vid2world_jax.models.frame_cache import FrameCache, check_cacheable
from vid2world_jax.models.temporal import NORM_MODES, PADDING_MODES
from vid2world_jax.models.unet_blocks import Downsample, EmbedSeq, ResBlock, Upsample, conv2d

WEIGHTS_PREFIX = "model.diffusion_model."
TORCH_ALIASES = {
    "framestride_embed": "fps_embedding",  # older 256 checkpoints name the fs MLP like this
    ".conv3d.": ".",  # Vid2World causal temporal convs wrap the Conv3d: `...conv1.2.conv3d.weight`
    "out.2.conv2d.": "out.2.",  # Vid2World's causal output conv wraps the Conv2d (CausalConv2d)
}
TORCH_IGNORE: list[str] = []  # every UNet key is used
TEXT_TOKENS = 77        # hard-coded in DynamiCrafter (text context length)
IMAGE_TOKENS_PER_FRAME = 16  # hard-coded in DynamiCrafter's per-frame context check

# torch constructor defaults of UNetModel (every field, so Class(**params) round-trips)
_TORCH_DEFAULTS = dict(
    in_channels=4, model_channels=320, out_channels=4, num_res_blocks=2, attention_resolutions=[4, 2, 1],
    dropout=0.0, channel_mult=[1, 2, 4, 8], conv_resample=True, dims=2, context_dim=None,
    use_scale_shift_norm=False, resblock_updown=False, num_heads=-1, num_head_channels=-1, transformer_depth=1,
    use_linear=False, use_checkpoint=False, temporal_conv=False, tempspatial_aware=False, temporal_attention=True,
    use_relative_position=True, use_causal_attention=False, temporal_length=None, use_fp16=False,
    addition_attention=False, temporal_selfatt_only=True, image_cross_attention=False,
    image_cross_attention_scale_learnable=False, default_fs=4, fs_condition=False,
)
# extra constructor kwargs of Vid2World's UNetModel (openaimodel3d_vid2world.py, thuml/Vid2World ae24077)
_VID2WORLD_TORCH_DEFAULTS = dict(action_emb=False, action_dim=13)
OUT_CONV_PADDINGS = ("symmetric", "causal_height")


def default_config() -> ml_collections.ConfigDict:
  """All torch fields (torch defaults) plus the Vid2World knobs (defaults = original DynamiCrafter)."""
  c = ml_collections.ConfigDict(_TORCH_DEFAULTS)
  # New knobs. `causal_temporal_attention` IS `use_causal_attention` (shared reference: setting one sets both).
  c.causal_temporal_attention = c.get_ref("use_causal_attention")  # tril mask in block temporal transformers
  c.causal_init_attn = False            # tril mask also in init_attn (never causal in DynamiCrafter)
  c.temporal_conv_padding = "symmetric"  # "symmetric" (1|1, original) or "causal" (2 left, 0 right)
  c.temporal_norm = "joint"             # GN on 5-D tensors: "joint" (original) | "per_frame" | "cumulative"
  c.action_dim = 0                      # 0: no action conditioning (no params)
  c.action_encoder = "mlp"              # "mlp" (continuous) | "embedding" (multi-/one-hot)
  c.out_conv_padding = "symmetric"      # output 3x3 conv: "symmetric" | "causal_height" (Vid2World: rows 2|0)
  c.dtype = "float32"                   # compute dtype ("bfloat16" ...); params stay float32
  c.remat = False                       # legacy switch: True = remat_block "nothing_saveable"
  # Named remat policies (models/remat.py: "none" | "nothing_saveable" | "dots_saveable" |
  # "dots_with_no_batch_dims_saveable" | "offload_dots_to_host" | "everything_saveable") per block kind:
  c.remat_block = "none"                # around every whole input/middle/output block (and init_attn)
  c.remat_resblock = "none"             # around each ResBlock (incl. its temporal conv)
  c.remat_spatial = "none"              # around each SpatialTransformer
  c.remat_temporal = "none"             # around each TemporalTransformer
  c.attention_impl = "auto"             # models/attention.ATTENTION_IMPLS: auto | einsum | xla | cudnn | chunked | splash
  c.activation_rules = ()               # logical-axis rules ((name, mesh axes), ...) for activation sharding
                                        # constraints (sharding.constrain); () = none. Names: batch, frames, height, width
  return c


# Knobs that change how the UNet runs (memory, kernels, activation layout), not its parameters nor what it computes
# (all attention kernels and remat policies are tested equal): weights trained under any values of these are valid
# under any other, so configs compared for weight compatibility ignore them (demo/pretrained_asset.py).
EXECUTION_KEYS = ("remat", "remat_block", "remat_resblock", "remat_spatial", "remat_temporal", "attention_impl",
                  "activation_rules")


def config_from_torch_params(params: dict) -> ml_collections.ConfigDict:
  """Config from a fixture ``config.json["params"]`` (torch constructor kwargs). Unknown keys raise.

  Params with ``action_emb`` are Vid2World's ``UNetModel``: its switches are applied as the original does
  (:func:`apply_vid2world_semantics`).
  """
  c = default_config()
  vid2world = "action_emb" in params
  for k, v in params.items():
    if k in _VID2WORLD_TORCH_DEFAULTS and vid2world:
      continue
    if k not in _TORCH_DEFAULTS:
      raise ValueError(f"unknown UNetModel parameter {k!r}")
    c[k] = list(v) if isinstance(v, tuple) else v
  if vid2world:
    extra = {**_VID2WORLD_TORCH_DEFAULTS, **{k: params[k] for k in _VID2WORLD_TORCH_DEFAULTS if k in params}}
    apply_vid2world_semantics(c, action_dim=int(extra["action_dim"]) if extra["action_emb"] else 0)
  return c


def apply_vid2world_semantics(c: ml_collections.ConfigDict, *, action_dim: int) -> None:
  """What ``use_causal_attention`` and ``action_emb`` mean in Vid2World's ``UNetModel`` (one flag ``causal``):

  causal mask in every temporal transformer **including init_attn**, causal temporal convs (``CausalConv3d``:
  2 frames padded before, 0 after), GroupNorms over time unchanged (statistics over the whole clip), and the
  output conv ``out.2`` built as ``CausalConv2d`` (causal along the image **height**: 2 rows padded above, 0
  below, 1 column each side). The action encoder is an embedding (``a @ W``) when ``action_dim == 51`` (CS:GO),
  else an MLP from ``action_dim``.
  """
  causal = bool(c.use_causal_attention)
  c.causal_init_attn = causal
  c.temporal_conv_padding = "causal" if causal else "symmetric"
  c.out_conv_padding = "causal_height" if causal else "symmetric"
  c.temporal_norm = "joint"
  c.action_dim = int(action_dim)
  c.action_encoder = "embedding" if action_dim == 51 else "mlp"


def real_config(variant: str) -> ml_collections.ConfigDict:
  """Full-size DynamiCrafter UNet of ``configs/inference_{variant}_v1.0.yaml`` ("256" | "512" | "1024")."""
  fs = {"256": 3, "512": 24, "1024": 10}
  if variant not in fs:
    raise ValueError(f"variant must be one of {sorted(fs)}, got {variant!r}")
  return config_from_torch_params(dict(
      in_channels=8, out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1], num_res_blocks=2,
      channel_mult=[1, 2, 4, 4], dropout=0.1, num_head_channels=64, transformer_depth=1, context_dim=1024,
      use_linear=True, use_checkpoint=True, temporal_conv=True, temporal_attention=True,
      temporal_selfatt_only=True, use_relative_position=False, use_causal_attention=False, temporal_length=16,
      addition_attention=True, image_cross_attention=True,
      image_cross_attention_scale_learnable=(variant == "256"), default_fs=fs[variant], fs_condition=True))


def _validate(cfg):
  unsupported = dict(dims=2, use_scale_shift_norm=False, resblock_updown=False, tempspatial_aware=False,
                     use_relative_position=False, temporal_selfatt_only=True, conv_resample=True)
  for k, want in unsupported.items():
    if cfg[k] != want:
      raise ValueError(f"UNet: {k}={cfg[k]!r} is not supported (only {want!r})")
  if cfg.temporal_conv_padding not in PADDING_MODES:
    raise ValueError(f"temporal_conv_padding must be one of {PADDING_MODES}, got {cfg.temporal_conv_padding!r}")
  if cfg.temporal_norm not in NORM_MODES:
    raise ValueError(f"temporal_norm must be one of {NORM_MODES}, got {cfg.temporal_norm!r}")
  if cfg.channel_mult[0] != 1:  # torch's output conv takes model_channels inputs: it fails the same way
    raise ValueError(f"channel_mult[0] must be 1 (DynamiCrafter's `out` conv has model_channels inputs), "
                     f"got {list(cfg.channel_mult)}")
  if cfg.num_head_channels == -1 and cfg.num_heads == -1:
    raise ValueError("set num_heads or num_head_channels")
  if cfg.out_conv_padding not in OUT_CONV_PADDINGS:
    raise ValueError(f"out_conv_padding must be one of {OUT_CONV_PADDINGS}, got {cfg.out_conv_padding!r}")
  if cfg.action_dim < 0:
    raise ValueError(f"action_dim must be >= 0, got {cfg.action_dim}")
  remat.block_policies(cfg)


class UNet(nnx.Module):
  """DynamiCrafter ``UNetModel``. See module docstring for the call signature."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    _validate(cfg)
    self.cfg = cfg.to_dict()
    self.remat_policies = remat.block_policies(cfg)
    attn_impl = cfg.get("attention_impl", "auto")
    dt = jnp.dtype(cfg.dtype)
    self.dtype = dt
    mc = cfg.model_channels
    ted = 4 * mc
    self.model_channels = mc
    self.time_embed = mlp_embed(mc, ted, dtype=dt, rngs=rngs)
    if cfg.fs_condition:
      self.fps_embedding = mlp_embed(mc, ted, dtype=dt, rngs=rngs)
    if cfg.action_dim:
      self.action_emb = action_encoder(cfg.action_encoder, cfg.action_dim, mc, ted, dtype=dt, rngs=rngs)

    def heads(ch):
      if cfg.num_head_channels == -1:
        return cfg.num_heads, ch // cfg.num_heads
      return ch // cfg.num_head_channels, cfg.num_head_channels

    def res(ci, co):
      return ResBlock(ci, ted, cfg.dropout, co, use_temporal_conv=cfg.temporal_conv,
                      temporal_conv_padding=cfg.temporal_conv_padding, temporal_norm=cfg.temporal_norm,
                      dtype=dt, rngs=rngs)

    def attn_layers(ch):
      nh, dh = heads(ch)
      out = [SpatialTransformer(ch, nh, dh, depth=cfg.transformer_depth, context_dim=cfg.context_dim,
                                use_linear=cfg.use_linear, image_cross_attention=cfg.image_cross_attention,
                                scale_learnable=cfg.image_cross_attention_scale_learnable,
                                attention_impl=attn_impl, dtype=dt, rngs=rngs)]
      if cfg.temporal_attention:
        out.append(TemporalTransformer(ch, nh, dh, depth=cfg.transformer_depth, use_linear=cfg.use_linear,
                                       causal=cfg.causal_temporal_attention, norm_mode=cfg.temporal_norm,
                                       attention_impl=attn_impl, dtype=dt, rngs=rngs))
      return out

    blocks = [EmbedSeq([conv2d(cfg.in_channels, mc, dtype=dt, rngs=rngs)])]
    self.addition_attention = cfg.addition_attention
    if cfg.addition_attention:
      self.init_attn = EmbedSeq([TemporalTransformer(
          mc, 8, cfg.num_head_channels, depth=cfg.transformer_depth, use_linear=False, causal=cfg.causal_init_attn,
          norm_mode=cfg.temporal_norm, attention_impl=attn_impl, dtype=dt, rngs=rngs)])
    chans, ch, ds = [mc], mc, 1
    for level, mult in enumerate(cfg.channel_mult):
      for _ in range(cfg.num_res_blocks):
        lay = [res(ch, mult * mc)]
        ch = mult * mc
        if ds in cfg.attention_resolutions:
          lay += attn_layers(ch)
        blocks.append(EmbedSeq(lay))
        chans.append(ch)
      if level != len(cfg.channel_mult) - 1:
        blocks.append(EmbedSeq([Downsample(ch, ch, dtype=dt, rngs=rngs)]))
        chans.append(ch)
        ds *= 2
    self.input_blocks = nnx.List(blocks)
    mid = [res(ch, ch)] + attn_layers(ch) + [res(ch, ch)]
    self.middle_block = EmbedSeq(mid)
    out_blocks = []
    for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
      for i in range(cfg.num_res_blocks + 1):
        ich = chans.pop()
        lay = [res(ch + ich, mc * mult)]
        ch = mc * mult
        if ds in cfg.attention_resolutions:
          lay += attn_layers(ch)
        if level and i == cfg.num_res_blocks:
          lay.append(Upsample(ch, ch, dtype=dt, rngs=rngs))
          ds //= 2
        out_blocks.append(EmbedSeq(lay))
    self.output_blocks = nnx.List(out_blocks)
    self.out = layers.Seq([layers.GroupNorm(ch, 32, 1e-5, rngs=rngs), layers.SiLU(),
                           conv2d(mc, cfg.out_channels, dtype=dt, rngs=rngs,
                                  padding=((2, 0), (1, 1)) if cfg.out_conv_padding == "causal_height" else None)])

  # ---------------------------------------------------------------- conditioning
  def embed(self, timesteps, fs, actions, action_mask, b: int, t: int, capture=None):
    """Per-frame embedding ``[B, T, 4*mc]`` = time_embed(t) + fps_embedding(fs) [+ mask * action_emb(a)]."""
    cfg = self.cfg
    timesteps = jnp.asarray(timesteps)
    if timesteps.shape not in ((b,), (b, t)):
      raise ValueError(f"timesteps must be [B]={b} or [B, T]=({b}, {t}), got {timesteps.shape}")
    emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).astype(self.dtype))
    if capture is not None:
      capture.setdefault("time_embed/out", emb)
    if cfg["fs_condition"]:
      if fs is None:
        fs = jnp.full((b,), cfg["default_fs"], jnp.int32)
      fs = jnp.asarray(fs)
      if fs.shape != (b,):
        raise ValueError(f"fs must be [B]={b}, got {fs.shape}")
      fs_emb = self.fps_embedding(timestep_embedding(fs, self.model_channels).astype(self.dtype))
      if capture is not None:
        capture.setdefault("fps_embedding/out", fs_emb)
      emb = emb + (fs_emb[:, None] if emb.ndim == 3 else fs_emb)
    if emb.ndim == 2:  # one timestep per clip: same embedding for every frame (torch repeat_interleave)
      emb = jnp.broadcast_to(emb[:, None], (b, t, emb.shape[-1]))
    if cfg["action_dim"]:
      a = self.action_emb(actions.astype(self.dtype))
      if capture is not None:
        capture.setdefault("action_emb_proj/out", a)   # torch name of the encoder's output (before the mask)
      if action_mask is not None:
        a = a * action_mask.astype(a.dtype)[..., None]
      emb = emb + a
    return emb

  def _check_actions(self, actions, action_mask, b: int, t: int):
    a_dim = self.cfg["action_dim"]
    if not a_dim:
      if actions is not None or action_mask is not None:
        raise ValueError("actions / action_mask given but the UNet has action_dim=0")
      return None, None
    if actions is None:
      raise ValueError(f"this UNet has action_dim={a_dim}: actions [B, T, A] are required")
    actions = jnp.asarray(actions)
    if actions.shape != (b, t, a_dim):
      raise ValueError(f"actions must be [B, T, A]=({b}, {t}, {a_dim}), got {actions.shape}")
    if action_mask is not None:
      action_mask = jnp.asarray(action_mask)
      if action_mask.shape != (b, t):
        raise ValueError(f"action_mask must be [B, T]=({b}, {t}), got {action_mask.shape}")
    return actions, action_mask

  def split_context(self, context, b: int, t: int):
    """``context [B, L, D]`` -> ``(text [B, 1, Lt, D], image [B, T | 1, Li, D] | None)``.

    ``L == 77 + 16*T``: frame f gets the 77 text tokens + image tokens ``77+16f .. 77+16f+15``; otherwise the
    whole context is shared by all frames (text = first 77 tokens, image = the rest), as in DynamiCrafter.
    """
    if (context is None or context.ndim != 3 or context.shape[0] != b
        or context.shape[-1] != self.cfg["context_dim"]):
      raise ValueError(f"context must be [B={b}, L, {self.cfg['context_dim']}], got "
                       f"{None if context is None else context.shape}")
    b, l, d = context.shape
    text = context[:, None, :TEXT_TOKENS].astype(self.dtype)
    if not self.cfg["image_cross_attention"]:
      return text, None
    if l <= TEXT_TOKENS:
      raise ValueError(f"image cross-attention needs context longer than {TEXT_TOKENS} tokens, got {l}")
    img = context[:, TEXT_TOKENS:].astype(self.dtype)
    if l == TEXT_TOKENS + IMAGE_TOKENS_PER_FRAME * t:
      img = img.reshape(b, t, IMAGE_TOKENS_PER_FRAME, d)
    else:
      img = img[:, None]
    return text, img

  # ---------------------------------------------------------------- forward
  def __call__(self, x, timesteps, context, fs=None, actions=None, action_mask=None, capture=None,
               cache: FrameCache | None = None):
    """``x [B, T, H, W, in_channels]`` -> ``[B, T, H, W, out_channels]`` float32.

    ``capture``: optional dict filled with intermediate activations (debug/parity; not with remat).
    ``cache``: a :class:`~vid2world_jax.models.frame_cache.FrameCache` (strictly causal UNets only): fill mode
    runs the history buffer ``[B, Th, ...]`` (``Th < cache.window``) and records the cache, step mode the new frame
    ``[B, 1, ...]`` alone (``context`` is always the window's: per-frame image tokens are selected here). Inference
    only: ``remat`` does not apply.
    """
    cfg = self.cfg
    if x.ndim != 5 or x.shape[-1] != cfg["in_channels"]:
      raise ValueError(f"x must be [B, T, H, W, {cfg['in_channels']}], got {x.shape}")
    policies = self.remat_policies
    if capture is not None and any(p != "none" for p in policies.values()):
      raise ValueError(f"capture is not available with remat (policies {policies})")
    rules = tuple(tuple(r) for r in cfg.get("activation_rules", ()))
    video_axes = ("batch", "frames", "height", "width", None)
    b, t = x.shape[:2]
    actions, action_mask = self._check_actions(actions, action_mask, b, t)
    if cache is None:
      ctx = self.split_context(context, b, t)
    else:
      check_cacheable(self)
      if (t >= cache.window) if cache.is_fill else (t != 1):
        want = f"fewer than window={cache.window} frames" if cache.is_fill else "1 frame (the new one)"
        raise ValueError(f"cached {cache.mode}: x must have {want}, got shape {x.shape}")
      text, img = self.split_context(context, b, cache.window)
      per_frame = img is not None and img.shape[1] == cache.window and cache.window > 1
      ctx = (text, cache.frames_of_call(img, t) if per_frame else img)
    emb = self.embed(timesteps, fs, actions, action_mask, b, t, capture)
    h = sharding.constrain(x.astype(self.dtype), video_axes, rules)
    emb = sharding.constrain(emb, ("batch", "frames", None), rules)

    def run(block, h, emb, ctx, name):
      return sharding.constrain(block(h, emb, ctx, capture, name, policies,
                                      None if cache is None else cache.scope(name)), video_axes, rules)

    if cache is None:   # inference with a frame cache: no remat
      run = remat.wrap(run, policies["block"], static_argnums=(4,))

    hs = []
    for i, block in enumerate(self.input_blocks):
      h = run(block, h, emb, ctx, f"input_blocks.{i}")
      if i == 0 and self.addition_attention:
        h = run(self.init_attn, h, emb, ctx, "init_attn")
      hs.append(h)
    h = run(self.middle_block, h, emb, ctx, "middle_block")
    for i, block in enumerate(self.output_blocks):
      h = jnp.concatenate([h, hs.pop()], axis=-1)
      h = run(block, h, emb, ctx, f"output_blocks.{i}")
    h = self.out[1](self.out[0](h.reshape((b * t,) + h.shape[2:])))   # GN, SiLU
    if capture is not None:
      capture.setdefault("out.1/out", h.reshape((b, t) + h.shape[1:]))
    y = self.out[2](h)                                                  # the output conv
    return y.reshape((b, t) + y.shape[1:]).astype(jnp.float32)


def build(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> UNet:
  # cheap_tracer_errors: under nnx.eval_shape/jit, construction is otherwise quadratic (see models/tracing.py)
  with tracing.cheap_tracer_errors():
    return UNet(cfg, rngs=rngs)


# Flax action-encoder layer index -> (Vid2World torch name, transform) per encoder kind. The CS:GO embedding
# `action_emb_preprocess` is an nn.Embedding [A, mc] used as `a @ W`: our bias-free Linear kernel [A, mc] as is.
_ACTION_TORCH_NAMES = {
    "mlp": {0: "action_emb_proj.0", 2: "action_emb_proj.2", 4: "action_emb_proj.4"},
    "embedding": {0: "action_emb_preprocess", 1: "action_emb_proj.0", 3: "action_emb_proj.2"},
}


def _action_entries(model: UNet) -> list[torch_names.Entry]:
  names = _ACTION_TORCH_NAMES[model.cfg["action_encoder"]]
  out = []
  for i, name in names.items():
    lin = model.action_emb[i]
    if name == "action_emb_preprocess":
      out.append(torch_names.Entry(WEIGHTS_PREFIX + name + ".weight", ("action_emb", i, "kernel"), "copy"))
      continue
    out.append(torch_names.Entry(WEIGHTS_PREFIX + name + ".weight", ("action_emb", i, "kernel"), "linear"))
    if lin.bias is not None:
      out.append(torch_names.Entry(WEIGHTS_PREFIX + name + ".bias", ("action_emb", i, "bias")))
  return out


def torch_name_table(model: UNet) -> list[torch_names.Entry]:
  """One Entry per Flax parameter: auto entries + the ``attn2.alpha`` scalars; the action encoder under
  Vid2World's names (``action_emb_proj.*``, ``action_emb_preprocess.weight``)."""
  table = [e for e in torch_names.auto_entries(model, WEIGHTS_PREFIX) if e.path[:1] != ("action_emb",)]
  for path, m in nnx.iter_graph(model):
    if isinstance(m, nnx.Module) and hasattr(m, "alpha") and isinstance(getattr(m, "alpha"), nnx.Param):
      table.append(torch_names.Entry(WEIGHTS_PREFIX + torch_names.torch_name(path) + ".alpha", tuple(path) + ("alpha",)))
  if model.cfg["action_dim"]:
    table += _action_entries(model)
  return table
