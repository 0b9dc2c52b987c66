"""Defaults shared by every training config (every user knob lives here, with a comment).

Launch (any config; every field can be overridden on the command line):

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo \
      --config.optim.lr=3e-4 --config.mesh.shape.fsdp=2

Config files never hold objects, only plain data. ``get_base_config()`` returns a complete ConfigDict; the
experiment files (rt1.py, csgo.py, demo.py, test_tiny.py) change a few fields.
"""

from __future__ import annotations

import ml_collections


def tiny_unet_config(*, channels: int = 32, in_channels: int = 24, out_channels: int = 12, frames: int = 8,
                     action_dim: int = 4, context_dim: int = 16, action_encoder: str = "mlp",
                     attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels: int = 16,
                     ) -> ml_collections.ConfigDict:
  """DynamiCrafter's UNet structure at toy width, causal as in Vid2World (fields of ``unet.default_config``).

  Default channels fit the patchify first stage with p=2 (latent 12 = 3*2*2 channels; input = latent + concat
  latent). GroupNorm uses 32 groups, so widths are multiples of 32.
  """
  from vid2world_jax.models import unet
  c = unet.default_config()
  c.update(dict(
      in_channels=in_channels, out_channels=out_channels, model_channels=channels,
      attention_resolutions=list(attention_resolutions), num_res_blocks=1, channel_mult=list(channel_mult),
      num_head_channels=num_head_channels, transformer_depth=1, context_dim=context_dim, use_linear=True,
      dropout=0.0, temporal_conv=True, temporal_attention=True, temporal_selfatt_only=True,
      use_relative_position=False, temporal_length=frames, addition_attention=True,
      image_cross_attention=False, fs_condition=False, action_dim=action_dim, action_encoder=action_encoder))
  causalize(c)
  return c


def causalize(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Vid2World's causal UNet (spec §2): causal temporal attention incl. init_attn, causal temporal convs,
  cumulative temporal norms (frame t normalised with the statistics of frames 0..t: strictly causal, and of
  the strict options the closest to the original, which pools GroupNorm statistics over the whole clip; measured
  on the bidirectional fixture: max rel change of the output 0.24 for "cumulative" vs 0.39 for "per_frame")."""
  c.use_causal_attention = True          # tril mask in every temporal transformer
  c.causal_init_attn = True              # ... including init_attn
  c.temporal_conv_padding = "causal"     # 2 frames left, 0 right
  c.temporal_norm = "cumulative"         # "per_frame" also strict; "joint" reproduces the original (leaks the future)
  return c


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                                # one seed: init, data order, noise levels, dropout
  c.init_from = ""                          # converted checkpoint dir (convert_torch_weights.py); "" = scratch
  c.init_transfer = "mixed"                 # causal temporal-conv weight transfer when the checkpoint is not yet
                                            # causal: "shift" | "mask" | "mixed" (paper's extrapolative)
  c.init_fresh = ()                         # extra parameter-name fragments allowed to keep fresh init
  c.total_steps = 100_000                   # optimizer steps

  # ---- model ------------------------------------------------------------------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.arch = "unet"                     # "unet" (models.unet) | "toy" (tiny causal conv net for trainer tests)
  c.model.variant = "tiny"                  # "256" | "512" | "1024": real configs of the VAE / resampler / CLIP
  c.model.unet = tiny_unet_config()         # UNet fields (rt1/csgo: models.unet.real_config(variant) + causal)
  c.model.first_stage = "patchify"          # "vae" (frozen AutoencoderKL, x0.18215) | "patchify" (space-to-depth)
  c.model.patch_size = 2                    # patchify factor p: [H,W,3] -> [H/p,W/p,3p^2] (latent channels)
  c.model.latent_scale = 1.0                # multiplies patchified pixels (vae uses its own 0.18215)
  c.model.context = "learned_null"          # "learned_null" ([L,D] trainable) | "resampler" (CLIP image tokens)
  c.model.context_len = 4                   # L of the learned null context
  # Noise schedule (arguments of vid2world_jax.diffusion.schedules.make_schedule; defaults = DynamiCrafter-512).
  c.model.schedule = ml_collections.ConfigDict(dict(
      num_timesteps=1000,                   # DDPM steps
      linear_start=0.00085,                 # betas: linspace(sqrt(start), sqrt(end), N)^2
      linear_end=0.012,
      schedule="linear",
      zero_terminal_snr=True,               # 512/1024: rescale to zero terminal SNR; 256: False
      parameterization="v",                 # "v" (512/1024) | "eps" (256): what the UNet predicts
      dynamic_rescale=True,                 # scale_arr on the clean latent (512: base 0.7; 1024: 0.3)
      base_scale=0.7,
      turning_step=400,
  ))
  c.model.fps = 3                           # fps condition (when the UNet has fs_condition)

  # ---- data (fields of vid2world_jax.data.config.default_data_config, plus source "synthetic") ----------------
  from vid2world_jax.data import config as data_config
  c.data = data_config.default_data_config()  # batch_size is GLOBAL (all hosts), before grad accumulation
  c.data.source = "synthetic"               # "synthetic" (moving squares, no files) | "embedded" | "rt1" | "csgo" ...
  c.data.clip_length = 8
  c.data.resolution = (32, 32)
  c.data.action_dim = 4

  # ---- diffusion forcing -------------------------------------------------------------------------------------
  c.train = ml_collections.ConfigDict()
  c.train.action_dropout_prob = 0.2         # per-frame action dropout (spec §4); 0 = the "NAG" ablation
  c.train.noise_levels = "per_frame"        # "per_frame": Diffusion Forcing (a level per frame, spec §3.1) |
                                            # "per_clip": one level per clip (video-diffusion pretraining) |
                                            # "history": per frame, and a fraction history_prob of the clips
                                            # has a lightly noised history before a random split frame
  c.train.objective = "diffusion_forcing"   # "diffusion_forcing": the world model's loss | "student": the few-step
                                            # student's (diffusion/student.py: next frame from history at the
                                            # sampler's history noise, at config.sampler's DDIM timesteps, x0 loss)
  c.train.history_prob = 0.5                # "history" only: fraction of clips with a lightly noised history
  c.train.history_max_level = 200           # "history" only: history levels ~ U{0..this} (noise augmentation)
  c.train.log_every = 50                    # steps between TensorBoard scalars
  c.train.ckpt_every = 1000                 # steps between async checkpoints (also saved on SIGTERM and at end)
  c.train.keep_checkpoints = 3              # keep the last K checkpoints
  c.train.sample_every = 0                  # steps between sample rollouts written as videos (0 = never)
  c.train.sample_ddim_steps = 10            # DDIM steps per frame in the periodic rollouts
  c.train.progress_bar = True               # tqdm on process 0
  c.train.stop_after = 0                    # debug/tests: act as if preempted after this step (0 = never)
  c.train.peak_flops_per_device = 0.0       # MFU denominator where the device kind is unknown (0 = auto/none)

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
  c.remat = False                           # legacy switch: True = remat_policy.block "nothing_saveable"
  # Named remat policies per UNet block kind (vid2world_jax/models/remat.py): "none" | "nothing_saveable" |
  # "dots_saveable" | "dots_with_no_batch_dims_saveable" | "offload_dots_to_host" | "everything_saveable".
  c.remat_policy = ml_collections.ConfigDict(dict(
      block="none",                         # around each whole input/middle/output UNet block
      resblock="none",                      # around each ResBlock (+ its temporal conv)
      spatial="none",                       # around each SpatialTransformer (per-frame self + cross-attention)
      temporal="none",                      # around each TemporalTransformer (attention over frames)
  ))
  c.attention_impl = "auto"                 # "auto" (cuDNN on GPU, splash on TPU where lengths allow, else XLA) |
                                            # "xla" | "cudnn" | "splash" | "chunked" (memory-linear XLA) | "einsum"

  # ---- sharding -----------------------------------------------------------------------------------------------
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = ml_collections.ConfigDict(dict(data=-1, fsdp=1))  # axis sizes, -1 = the rest of the devices
  c.mesh.fsdp_min_size = 2 ** 14           # params with fewer elements are replicated
  c.mesh.rules = ()                         # extra [regex over 'a/b/c' param path, spec] pairs, first match wins;
                                            # spec is a tuple of axis names / None per dim; on the command line:
                                            # --config.mesh.rules="(('unet/.*/kernel', (None, 'fsdp')),)"
  # Activation sharding constraints on the UNet's block outputs by logical axis ("batch", "frames", "height",
  # "width"): ((logical, mesh axes), ...). Add ("frames", "seq") with a "seq" mesh axis for sequence parallelism.
  c.mesh.activation_rules = (("batch", ("data", "fsdp")),)

  # ---- sampler (every rollout of the run: sample videos, rollout CLI, envs, play, the demo's evaluation) ---------
  # Fields and their comments: vid2world_jax/diffusion/sampler_settings.py (DDIM steps, eta, spacing, guidance
  # "cfg" | "none", guidance_scale, guidance_rescale, history_noise, final_alpha_one); the CLIs' sampler flags
  # (--ddim_steps, --guidance, ...) override it per command.
  from vid2world_jax.diffusion import sampler_settings
  c.sampler = sampler_settings.default_sampler_config()

  # ---- eval (periodic rollouts) ---------------------------------------------------------------------------------
  c.eval = ml_collections.ConfigDict()
  c.eval.context_frames = 1                 # ground-truth frames given to the rollout
  c.eval.cached_rollout = "auto"            # every session (CLI, envs, play, the demo): the cached fast path (same
  #                                           frames, faster): "auto" = whenever the UNet is strictly causal and
  #                                           a frame takes more than one network pass | "on" | "off" (--nocached)
  c.eval.cpu_step_compiler_options = {       # XLA options of the per-frame step (play, envs) on CPU only: each
      "xla_cpu_experimental_ynn_fusion_type":  # dot its own YNNPACK call, convolutions by XLA: batch-1 student
      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}    # 28.9 -> 35.2 frames/s, teacher 7.6 -> 8.9 (docs/profile.md); {} = XLA's
  return c
