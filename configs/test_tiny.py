"""Tiny config for tests: 16x16 synthetic clips of 4 frames, patchify p=2 (8x8x12 latents), a 2-level UNet.

  python -m vid2world_jax.train --config=configs/test_tiny.py --workdir=/tmp/v2w_tiny
"""

from configs import base


def get_config(arg=None):
  c = base.get_base_config()
  c.seed = 0
  c.total_steps = 20
  c.model.arch = "unet"
  c.model.first_stage = "patchify"
  c.model.patch_size = 2
  c.model.context = "learned_null"
  c.model.context_len = 2
  c.model.unet = base.tiny_unet_config(channels=32, in_channels=24, out_channels=12, frames=4, action_dim=2,
                                       context_dim=16, attention_resolutions=(2,), channel_mult=(1, 2),
                                       num_head_channels=16)
  c.data.source = "synthetic"
  c.data.batch_size = 8
  c.data.clip_length = 4
  c.data.resolution = (16, 16)
  c.data.action_dim = 2
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 2
  c.optim.grad_clip_norm = 1.0
  c.optim.weight_decay = 0.0
  c.train.log_every = 5
  c.train.ckpt_every = 10
  c.train.progress_bar = False
  if arg == "toy":                           # --config=configs/test_tiny.py:toy  -> the toy denoiser
    c.model.arch = "toy"
  if arg == "vae":                           # :vae -> toy-width VAE first stage + CLIP-image resampler context
    c.model.variant = "tiny"                 # world_model.component_config: tiny VAE / CLIP / resampler
    c.model.first_stage = "vae"              # 32x32 frames -> 4x4x4 latents
    c.model.context = "resampler"
    c.model.unet = base.tiny_unet_config(channels=32, in_channels=8, out_channels=4, frames=4, action_dim=2,
                                         context_dim=16, attention_resolutions=(2,), channel_mult=(1, 2),
                                         num_head_channels=16)
    c.data.resolution = (32, 32)
    c.data.batch_size = 4
  return c
