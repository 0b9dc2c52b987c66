"""Run-config checks of the trainer, before anything is compiled or allocated: one ``ConfigError`` line.

``validate_config`` (the whole config, returns the resolved mesh shape), ``check_inputs`` (the data and
checkpoint a run needs from the user), ``config_job`` (which job a config runs). The model config of a run is
``world_model.model_config`` (one resolution for training and inference).
"""

from __future__ import annotations

import os

from vid2world_jax import sharding, world_model
from vid2world_jax.training import steps


class ConfigError(ValueError):
  """A bad config value, reported as one line before anything is compiled."""


# =============================================================================================================
# Config validation (no compilation, no allocation).

def validate_config(cfg, num_devices: int, process_count: int) -> dict:
  """Raises ConfigError with a one-line message; returns the resolved mesh shape."""
  def need(cond, msg):
    if not cond:
      raise ConfigError(msg)

  check_inputs(cfg)   # missing data / checkpoint first: the most common mistake, reported before anything else
  m = cfg.model
  need(m.arch in ("unet", "toy"), f"model.arch must be 'unet' or 'toy', got {m.arch!r}")
  need(m.first_stage in ("vae", "patchify"), f"model.first_stage must be 'vae' or 'patchify', got {m.first_stage!r}")
  need(m.context in ("learned_null", "resampler"), f"model.context must be 'learned_null' or 'resampler', got {m.context!r}")
  need(cfg.precision in ("float32", "bfloat16"), f"precision must be 'float32' or 'bfloat16', got {cfg.precision!r}")
  need(m.schedule.parameterization in ("v", "eps"), f"model.schedule.parameterization must be 'v' or 'eps'")
  need(cfg.total_steps >= 1, f"total_steps must be >= 1, got {cfg.total_steps}")
  need(cfg.train.ckpt_every >= 1, f"train.ckpt_every must be >= 1, got {cfg.train.ckpt_every}")
  need(cfg.train.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1")
  need(0.0 <= cfg.train.action_dropout_prob < 1.0, f"train.action_dropout_prob must be in [0, 1)")
  need(cfg.train.get("noise_levels", "per_frame") in steps.NOISE_LEVELS,
       f"train.noise_levels must be one of {steps.NOISE_LEVELS}, got {cfg.train.get('noise_levels')!r}")
  need(cfg.train.get("objective", "diffusion_forcing") in steps.OBJECTIVES,
       f"train.objective must be one of {steps.OBJECTIVES}, got {cfg.train.get('objective')!r}")
  if cfg.train.get("objective") == "student":
    need("sampler" in cfg, "train.objective='student' trains for config.sampler's DDIM steps: the config has no "
         "sampler block")
    need(int(cfg.data.clip_length) >= 2, "train.objective='student' needs clips of >= 2 frames (history + target)")
    need(steps.student_window_length(cfg) <= int(cfg.data.clip_length),
         f"config.sampler.window {steps.student_window_length(cfg)} exceeds data.clip_length "
         f"{cfg.data.clip_length}: the student trains on windows of its sampler's length")
  need(0.0 <= cfg.optim.ema_decay < 1.0, f"optim.ema_decay must be in [0, 1) (0 = off)")
  need(cfg.optim.grad_accum_steps >= 1, f"optim.grad_accum_steps must be >= 1")
  try:
    mesh_shape = sharding.resolve_mesh_shape(cfg.mesh.shape.to_dict(), num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  d = cfg.data
  bdiv = mesh_shape["data"] * mesh_shape["fsdp"]
  gb, k = int(d.batch_size), int(cfg.optim.grad_accum_steps)
  need(gb % bdiv == 0, f"data.batch_size {gb} is not divisible by the data x fsdp mesh axes ({bdiv} devices)")
  need(gb % (bdiv * k) == 0,
       f"data.batch_size {gb} is not divisible by data x fsdp ({bdiv}) x optim.grad_accum_steps ({k})")
  need(gb % process_count == 0, f"data.batch_size {gb} is not divisible by the {process_count} processes")
  c_lat = world_model.latent_channels(m)
  try:
    world_model.latent_hw(m, d.resolution)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  u = m.unet
  need(u.in_channels == 2 * c_lat, f"model.unet.in_channels must be 2 x latent channels = {2 * c_lat} "
       f"(noisy latent + concat frame), got {u.in_channels}")
  need(u.out_channels == c_lat, f"model.unet.out_channels must be the latent channels {c_lat}, got {u.out_channels}")
  # A first level narrower than the latent cannot carry the noise (eps / v) to the output: p=4 patchify (48
  # channels) through 32 channels left the demo unable to memorise a single clip (docs/demo_results.md).
  need(u.model_channels >= c_lat, f"model.unet.model_channels ({u.model_channels}) must be >= the latent channels "
       f"({c_lat}); use a smaller model.patch_size or a wider UNet")
  need(u.temporal_length >= d.clip_length,
       f"data.clip_length {d.clip_length} exceeds model.unet.temporal_length {u.temporal_length}")
  need(u.action_dim in (0, d.action_dim),
       f"model.unet.action_dim {u.action_dim} != data.action_dim {d.action_dim} (or 0: a video-only model)")
  if d.source != "synthetic":
    from vid2world_jax.data import config as data_config
    try:
      data_config.check_config(d)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if d.source == "latents":
    need(int(cfg.train.sample_every) == 0, "train.sample_every needs the VAE decoder, which training from "
         "data.source=latents does not build; set --config.train.sample_every=0")
    from vid2world_jax.data import latents
    try:
      latents.check_compatible(latents.read_meta(d.path), d, m)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  return mesh_shape


PATH_SOURCES = {"rt1": ".../fractal20220817_data/0.1.0 (RLDS TFRecords)", "csgo": "the DIAMOND full_res dir",
                "episodes": "a directory of .npz episodes", "latents": "the encode_latents --out DIR"}
FULL_SIZE_VARIANTS = ("256", "512", "1024")   # the paper's models (model.variant): pretrained init expected
SCRATCH = "scratch"                           # --config.init_from=scratch: train a full-size model from scratch


def init_checkpoint(cfg) -> str:
  """The converted checkpoint to initialise from, or "" (``init_from`` empty or "scratch")."""
  path = str(cfg.get("init_from", "") or "")
  return "" if path == SCRATCH else path


def check_inputs(cfg) -> None:
  """The inputs a run needs from the user (data.path, init_from), checked before any model is built: one
  ConfigError line naming every flag to set."""
  problems = []
  d = cfg.data
  if d.source in PATH_SOURCES:
    if not d.path:
      problems.append(f"data.source={d.source} needs its data: set --config.data.path=<{PATH_SOURCES[d.source]}>")
    elif "://" not in d.path and not os.path.exists(d.path):
      problems.append(f"data.path not found: {d.path} (set --config.data.path=<{PATH_SOURCES[d.source]}>)")
  ckpt = init_checkpoint(cfg)
  if ckpt:
    if not os.path.isdir(ckpt):
      problems.append(f"init_from checkpoint not found: {ckpt} (set --config.init_from=<converted checkpoint dir "
                      "from convert_torch_weights.py>)")
    elif not os.path.exists(os.path.join(ckpt, "config.json")):
      problems.append(f"init_from {ckpt} is not a converted checkpoint (no config.json; see "
                      "convert_torch_weights.py)")
  elif (cfg.model.arch == "unet" and str(cfg.model.get("variant", "")) in FULL_SIZE_VARIANTS
        and cfg.get("init_from", "") != SCRATCH):
    problems.append(f"the full-size {cfg.model.variant} model needs pretrained weights: set "
                    "--config.init_from=<converted DynamiCrafter checkpoint dir> (convert_torch_weights.py); "
                    "training it from scratch fails (paper: FVD 1768.8), --config.init_from=scratch does it anyway")
  if problems:
    raise ConfigError("; ".join(problems))


def uses_latents(cfg) -> bool:
  """``data.source == "latents"``: batches carry precomputed VAE moments / CLIP tokens (data/latents.py)."""
  return cfg.data.source == "latents"


JOBS = ("train", "recipe", "demo")  # config.job values (absent = "train"); "demo" = "recipe" (older configs)


def config_job(cfg) -> str:
  """``config.job``: "train" (``loop.train_and_evaluate``, the default) or "recipe" (the stages listed in
  ``config.recipe``, run by ``training.recipe``; "demo" is the same job under its older name)."""
  job = cfg.get("job", "train")
  if job not in JOBS:
    raise ConfigError(f"job must be one of {JOBS}, got {job!r}")
  if job != "train" and "recipe" not in cfg:
    raise ConfigError(f"job {job!r} needs a config.recipe block (stages, fns, prepare; see training.recipe)")
  return job
