"""Defaults shared by every training config (every user knob lives here, with a comment).

Launch (any config; every field can be overridden on the command line):

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo \
      --config.optim.lr=3e-4 --config.mesh.shape.fsdp=2

Config files never hold objects, only plain data. ``get_base_config()`` returns a complete ConfigDict; the
experiment files (rt1.py, csgo.py, demo.py, test_tiny.py) change a few fields.
"""

from __future__ import annotations

import ml_collections


def tiny_unet_config(*, channels: int = 16, in_channels: int = 8, out_channels: int = 4, frames: int = 8,
                     action_dim: int = 4, context_dim: int = 16, action_encoder: str = "mlp",
                     attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels: int = 8,
                     ) -> ml_collections.ConfigDict:
  """A UNet config with DynamiCrafter's structure at toy width (field names = torch UNetModel kwargs).

  Used by demo/test configs. The full-size numbers come from ``vid2world_jax.models.unet.real_config``.
  """
  return ml_collections.ConfigDict(dict(
      in_channels=in_channels,              # noisy latent + concat-conditioning latent channels
      out_channels=out_channels,            # predicted v (same channels as the latent)
      model_channels=channels,              # width of level 0
      attention_resolutions=list(attention_resolutions),  # downsample factors that get transformers
      num_res_blocks=1,                     # ResBlocks per level
      channel_mult=list(channel_mult),      # width multiplier per level
      num_head_channels=num_head_channels,  # attention head width
      transformer_depth=1,                  # BasicTransformerBlocks per transformer
      context_dim=context_dim,              # cross-attention context width
      use_linear=True,                      # linear proj_in/out in transformers
      dropout=0.0,                          # dropout in ResBlocks / temporal convs
      temporal_conv=True,                   # TemporalConvBlock after each ResBlock
      temporal_attention=True,              # TemporalTransformer after each SpatialTransformer
      temporal_selfatt_only=True,           # both temporal attentions are self-attention
      use_relative_position=False,          # no relative position bias over time
      use_causal_attention=True,            # causal temporal attention (Vid2World)
      causal_temporal_attention=True,       # same, as the NNX UNet's own switch
      causal_init_attn=True,                # also make init_attn causal
      temporal_conv_padding="causal",       # "symmetric" (DynamiCrafter) | "causal" (Vid2World)
      temporal_norm="per_frame",            # "joint" (original) | "per_frame" | "cumulative"
      temporal_length=frames,               # clip length the causal mask is built for
      addition_attention=True,              # init_attn after the first conv
      image_cross_attention=False,          # dual (text + image) cross-attention
      image_cross_attention_scale_learnable=False,
      default_fs=3,                         # fps condition passed by the Vid2World loaders
      fs_condition=False,                   # fps embedding added to the time embedding
      action_dim=action_dim,                # action vector width (0 = no action conditioning)
      action_encoder=action_encoder,        # "mlp" (continuous) | "embedding" (multi-hot)
      dtype="float32",                      # compute dtype inside the UNet (set from config.precision)
      remat=False,                          # rematerialise each block (set from config.remat)
  ))


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                                # one seed: init, data order, noise levels, dropout
  c.init_from = ""                          # converted checkpoint dir (convert_torch_weights.py); "" = scratch
  c.total_steps = 100_000                   # optimizer steps

  # ---- model ------------------------------------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.variant = "tiny"                  # "tiny" (uses model.unet below) | "256" | "512" | "1024" (real_config)
  c.model.unet = tiny_unet_config()         # UNet fields; replaced by real_config(variant) unless variant == "tiny"
  c.model.first_stage = "patchify"          # "vae" (frozen AutoencoderKL, x0.18215) | "patchify" (space-to-depth)
  c.model.patch_size = 2                    # patchify factor p: [H,W,3] -> [H/p,W/p,3p^2] (latent channels)
  c.model.latent_scale = 1.0                # multiplies patchified pixels (vae uses its own 0.18215)
  c.model.context = "learned_null"          # "learned_null" ([L,D] trainable) | "resampler" (CLIP image tokens)
  c.model.context_len = 4                   # L of the learned null context
  c.model.parameterization = "v"            # "v" | "eps": what the UNet predicts
  c.model.schedule = "zero_snr_linear"      # "zero_snr_linear" (512/1024) | "linear" (256)
  c.model.num_timesteps = 1000              # DDPM steps
  c.model.dynamic_rescale = True            # DynamiCrafter-512 scale_arr (base 0.7, turning step 400)
  c.model.fps = 3                           # fps condition (when the UNet has fs_condition)

  # ---- data ------------------------------------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.source = "synthetic"               # "synthetic" | any source of vid2world_jax.data ("embedded", "rt1", ...)
  c.data.global_batch_size = 8              # clips per optimizer step, over all hosts (before grad accumulation)
  c.data.clip_length = 8                    # T frames per clip
  c.data.resolution = [32, 32]              # [H, W] pixels
  c.data.action_dim = 4                     # A
  c.data.kwargs = ml_collections.ConfigDict()  # extra fields passed to vid2world_jax.data (paths, splits, ...)

  # ---- diffusion forcing -------------------------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.action_dropout_prob = 0.2         # per-frame action dropout (spec §4); 0 = the "NAG" ablation
  c.train.num_loss_buckets = 4              # noise-level buckets for the per-bucket loss scalars
  c.train.log_every = 50                    # steps between TensorBoard scalars
  c.train.ckpt_every = 1000                 # steps between async checkpoints (also saved on SIGTERM and at end)
  c.train.keep_checkpoints = 3              # keep the last K checkpoints
  c.train.sample_every = 0                  # steps between sample rollouts written as videos (0 = never)
  c.train.sample_ddim_steps = 10            # DDIM steps per frame in the periodic rollouts
  c.train.progress_bar = True               # tqdm on process 0

  # ---- optimisation -------------------------------------------------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-5                         # peak learning rate (paper: 1e-5 constant)
  c.optim.schedule = "constant"             # "constant" | "cosine" (after warmup)
  c.optim.warmup_steps = 0                  # linear warmup from 0
  c.optim.end_lr_factor = 0.0               # cosine decays to lr * end_lr_factor
  c.optim.b1 = 0.9                          # AdamW betas / eps / decay: PyTorch defaults (spec §3.2)
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.01
  c.optim.grad_clip_norm = 0.5              # global-norm clipping (0 = off)
  c.optim.grad_accum_steps = 1              # micro-batches per optimizer step (global batch is split)
  c.optim.ema_decay = 0.0                   # EMA of parameters (0 = off; paper: off)

  c.precision = "float32"                   # "float32" | "bfloat16" compute; master weights + opt state fp32
  c.remat = False                           # rematerialise every UNet block (gradient checkpointing)

  # ---- sharding -----------------------------------------------------------------------------------------------
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # axis sizes, -1 = the rest of the devices
  c.mesh.fsdp_min_size = 2 ** 14           # params with fewer elements are replicated
  c.mesh.rules = []                         # extra [regex over 'a/b/c' param path, spec] pairs, first match wins;
                                            # spec is a list of axis names / None per dim, e.g. [None, "fsdp"]

  # ---- eval (periodic rollouts) ---------------------------------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.context_frames = 1                 # ground-truth frames given to the rollout
  c.eval.guidance_scale = 2.5               # causal action guidance s (code convention, spec §5)
  c.eval.guidance_rescale = 0.7             # CFG rescale phi
  return c
