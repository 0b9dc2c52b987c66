r"""Vid2World on RT-1 (Fractal) with the paper's settings (spec §3, §4; paper Table 3).

  python -m vid2world_jax.train --config=configs/rt1.py --workdir=$WORKDIR \
      --config.init_from=$CKPT --config.data.path=$RT1/fractal20220817_data/0.1.0

``--config=configs/rt1.py:256`` gives the 256x256 variant (DynamiCrafter-256 base: eps-prediction, no
zero-SNR); the default is the 320x512 variant built on DynamiCrafter-512, as in the released code.
"""

from configs import base


def paper_world_model(c, *, variant: str, action_dim: int, action_encoder: str, clip_length: int):
  """Fields shared by rt1.py and csgo.py: full-size causal UNet, VAE, CLIP-image resampler context."""
  from vid2world_jax.models import unet
  c.model.arch = "unet"
  c.model.variant = variant
  u = unet.real_config(variant)
  base.causalize(u)                        # causal attention (incl. init_attn), causal convs, per-frame norms
  u.action_dim = action_dim
  u.action_encoder = action_encoder
  u.temporal_length = clip_length
  u.default_fs = 3                         # Vid2World's loaders pass fps=3
  c.model.unet = u
  c.model.first_stage = "vae"              # frozen AutoencoderKL, latents x 0.18215
  c.model.context = "resampler"            # 77 empty-prompt text tokens + 16 resampled CLIP-image tokens
  c.model.fps = 3
  if variant == "256":                     # DynamiCrafter-256: eps, plain linear betas, no dynamic rescale
    c.model.schedule.update(dict(parameterization="eps", zero_terminal_snr=False, dynamic_rescale=False))
  else:                                    # 512: v, zero-SNR, scale_arr base 0.7 (1024: 0.3)
    c.model.schedule.update(dict(parameterization="v", zero_terminal_snr=True, dynamic_rescale=True,
                                 base_scale=0.7 if variant == "512" else 0.3))
  c.data.resolution = {"256": (256, 256), "512": (320, 512), "1024": (576, 1024)}[variant]
  c.data.clip_length = clip_length
  c.data.action_dim = action_dim
  c.data.augment = True                    # spec §3.3: reflect-pad + crop, colour jitter (clip-consistent)
  # Optimisation (spec §3.2): AdamW 1e-5 constant, clip 0.5, wd 0.01, 16 clips/step = 8 x 2 accumulation.
  c.total_steps = 100_000
  c.data.batch_size = 16
  c.optim.grad_accum_steps = 2
  c.optim.lr = 1e-5
  c.optim.schedule = "constant"
  c.optim.warmup_steps = 0
  c.optim.grad_clip_norm = 0.5
  c.optim.weight_decay = 0.01
  c.optim.ema_decay = 0.0                  # use_ema: False
  c.precision = "bfloat16"                 # paper: fp16 mixed; here bf16 compute, fp32 master + Adam state
  c.remat = True                           # gradient checkpointing on (= remat_policy.block "nothing_saveable")
  c.attention_impl = "auto"                # splash on TPU, cuDNN flash on GPU (docs/memory_plan.md: what fits where)
  c.train.action_dropout_prob = 0.2
  c.train.ckpt_every = 1000
  c.train.keep_checkpoints = 3
  c.train.log_every = 50
  c.train.sample_every = 5000
  c.train.sample_ddim_steps = 50
  c.sampler.guidance_scale = 2.5           # s = 2.5 in the code's convention (lambda = 1.5)
  c.sampler.guidance_rescale = 0.7
  c.mesh.shape.data = -1                   # set fsdp to shard params + Adam state, e.g. --config.mesh.shape.fsdp=8
  c.mesh.shape.fsdp = 1                    # TPU plans in docs/memory_plan.md shard over all chips: fsdp=-1, data=1
  return c


def get_config(arg=None):
  variant = arg or "512"
  c = base.get_base_config()
  paper_world_model(c, variant=variant, action_dim=13, action_encoder="mlp", clip_length=16)
  c.data.source = "rt1"
  c.data.path = ""                          # .../fractal20220817_data/0.1.0 (RLDS)
  c.eval.context_frames = 1                 # RT-1: 1 context frame, 15 predicted
  return c
