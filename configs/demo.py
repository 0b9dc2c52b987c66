r"""The embedded default: the whole Vid2World recipe in miniature on the embedded MinAtar Breakout episodes (32x32,
3 px per game cell, one-hot actions), in pixel space (patchify p=2 -> 16x16x12 latents), with a tiny UNet, on CPU.

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo
  python -m vid2world_jax.demo.ablations --config=configs/demo.py --workdir=/tmp/v2w_demo   # ablation table

``config.job = "demo"`` (= "recipe") makes ``train.main`` run the stages listed in ``config.recipe`` with the generic
runner ``vid2world_jax.training.recipe`` (bidirectional pretraining, causalization, Diffusion-Forcing fine-tune, guided
rollouts, long horizon, policy evaluation, report; implemented in ``vid2world_jax.demo.pipeline``); every knob of the
run is in ``config.demo`` (e.g. ``--config.demo.finetune_steps=100``), its sampler in ``config.sampler``
(e.g. ``--config.sampler.ddim_steps=3``). ``--config.job=train`` runs the plain
trainer (``train_and_evaluate``) on the same model and data instead.
"""

from configs import base
from vid2world_jax.demo import defaults  # config data only (no pipeline code)


def get_config(arg=None):
  c = base.get_base_config()
  c.job = "demo"                            # "demo"/"recipe": train.main runs config.recipe | "train": plain trainer
  c.total_steps = 300                       # plain trainer only (job="train"); the demo uses demo.*_steps
  c.model.arch = "unet"
  c.model.first_stage = "patchify"
  c.model.patch_size = 2                    # 32x32x3 -> 16x16x12. The latent must have FEWER channels than the
  #                                           UNet's first level (32): p=4 (48 channels) squeezed the noise through
  #                                           32 channels and the model could not even memorise one clip (v-loss
  #                                           stuck at 0.35, PSNR 9.4 dB; docs/demo_results.md)
  c.model.context = "learned_null"          # no CLIP: a learned [L, D] context
  c.model.context_len = 4
  c.model.unet = base.tiny_unet_config(channels=32, in_channels=24, out_channels=12, frames=8, action_dim=3,
                                       context_dim=32, attention_resolutions=(2,), channel_mult=(1, 2),
                                       num_head_channels=16)
  c.data.source = "embedded"                # MinAtar Breakout (data/breakout.py), recorded on first use and cached
  c.data.embedded.env = "breakout"          # "metaworld": Meta-World drawer-close (action_dim 4, 64x64 recording)
  c.data.resolution = (32, 32)             # Breakout's native 32x32 (10x10 cells of 3 px + wall)
  c.data.clip_length = 8
  c.data.action_dim = 3                     # one-hot [noop, left, right]
  c.data.batch_size = 4                     # small batches, more steps: better per CPU-second at this scale
  c.model.schedule.dynamic_rescale = False  # DynamiCrafter-512's x0 rescale is for large latents; with few DDIM
  #                                           steps it leaves the output scaled by scale_arr[last step] (0.85 at 5)
  c.data.num_threads = 1                    # one read thread: concurrent np.load header parsing (ast.literal_eval)
  #                                           crashed a run with "AST constructor recursion depth mismatch" on
  #                                           CPython 3.11.7 (a CPython thread-safety bug, fixed in later 3.11.x)
  c.optim.lr = 2e-3                         # fine-tune peak lr (the demo's stage b); pretraining: demo.pretrain_lr
  c.optim.warmup_steps = 20
  c.optim.schedule = "cosine"
  c.optim.end_lr_factor = 0.1
  c.optim.grad_clip_norm = 1.0
  c.optim.weight_decay = 0.0
  c.train.log_every = 10
  c.train.ckpt_every = 100
  c.train.sample_every = 0
  c.demo = defaults.default_demo_config()   # stages (a)-(d), policy evaluation and ablation knobs
  c.sampler = defaults.demo_sampler_config()  # 5 DDIM steps, eta 1, guidance 2.5 (rescale 0.7), history noise 100
  c.recipe = defaults.default_recipe_config()  # stages (pretrain ... report) in order and their implementations
  if arg == "synthetic":                    # --config=configs/demo.py:synthetic : no Meta-World recording
    c.data.source = "synthetic"
  return c
