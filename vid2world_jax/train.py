r"""Diffusion-Forcing fine-tuning of a causal video UNet into an action-conditioned world model.

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo
  python -m vid2world_jax.train --config=configs/rt1.py --workdir=gs://bucket/rt1 \
      --config.init_from=/ckpt/dynamicrafter_512_converted --config.mesh.shape.fsdp=8

The same command runs on one CPU, on fake CPU devices, on a TPU pod slice (every worker runs it) or on a SLURM
GPU cluster. Multi-process runs are formed by ``jax.distributed.initialize`` from the environment
(``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, set by launch/; or Cloud TPU / SLURM
auto-detection). Phases: validate config -> mesh -> data -> sharded init (or resume, or init_from) -> jit step
-> loop (log, checkpoint, preemption, non-finite guard).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import config_flags

from vid2world_jax import checkpointing, logging_utils, optim, sharding, steps, world_model
from vid2world_jax.data.common import BadDataError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard logs and samples go here.")


class ConfigError(ValueError):
  """A bad config value, reported as one line before anything is compiled."""


class NonFiniteLoss(RuntimeError):
  pass


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be written, or no checkpoint that restores and verifies (message: one line)."""


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


def model_config(cfg) -> ml_collections.ConfigDict:
  """config.model with the global switches (compute dtype, remat) written into the UNet config."""
  m = ml_collections.ConfigDict(cfg.model.to_dict())
  m.unet.dtype = cfg.precision
  m.unet.remat = bool(cfg.remat)
  for kind, policy in cfg.get("remat_policy", {}).items():
    m.unet[f"remat_{kind}"] = policy
  m.unet.attention_impl = cfg.get("attention_impl", "auto")
  m.unet.activation_rules = tuple(tuple(r) for r in cfg.mesh.get("activation_rules", ()))
  return m


# =============================================================================================================
# Data.

class SyntheticClips:
  """Deterministic moving-square clips whose motion follows the actions (learnable, no files).

  Yields host-local ``{"frames" [B_local, T, H, W, 3] in [-1, 1], "actions" [B_local, T, A] in [-1, 1]}``;
  clip ``i`` of process ``p`` depends only on ``(seed, p, i)``. ``get_state``/``set_state`` = position.
  """

  def __init__(self, dcfg, *, process_index: int, process_count: int):
    self.b = int(dcfg.batch_size) // process_count
    self.t, self.a = int(dcfg.clip_length), int(dcfg.action_dim)
    self.h, self.w = (int(s) for s in dcfg.resolution)
    self.seed, self.proc = int(dcfg.seed), process_index
    self.pos = 0

  def _clip(self, i):
    r = np.random.default_rng([self.seed, self.proc, i])
    acts = r.uniform(-1, 1, (self.t, self.a)).astype(np.float32)
    bg, fg = r.uniform(-1, 0, 3), r.uniform(0, 1, 3)
    s = max(2, self.h // 4)
    y, x = r.uniform(0, self.h - s), r.uniform(0, self.w - s)
    frames = np.empty((self.t, self.h, self.w, 3), np.float32)
    for f in range(self.t):
      frames[f] = bg
      yi, xi = int(y), int(x)
      frames[f, yi:yi + s, xi:xi + s] = fg
      y = float(np.clip(y + acts[f, 0] * s / 2, 0, self.h - s))
      x = float(np.clip(x + acts[f, 1 % self.a] * s / 2, 0, self.w - s))
    return frames, acts

  def __iter__(self):
    return self

  def __next__(self):
    clips = [self._clip(self.pos * self.b + j) for j in range(self.b)]
    self.pos += 1
    return {"frames": np.stack([c[0] for c in clips]), "actions": np.stack([c[1] for c in clips])}

  def get_state(self):
    return {"pos": self.pos}

  def set_state(self, state):
    self.pos = int(state["pos"])


def make_data_iterator(dcfg):
  pi, pc = jax.process_index(), jax.process_count()
  if dcfg.source == "synthetic":
    return SyntheticClips(dcfg, process_index=pi, process_count=pc)
  from vid2world_jax.data import pipeline
  return pipeline.make_train_iterator(dcfg, process_index=pi, process_count=pc)


# =============================================================================================================
# Sharded initialisation.

class Setup:
  """Everything static about a run: mesh, graphdefs, shardings, optimizer, the jitted step."""

  def __init__(self, cfg, mesh):
    self.cfg, self.mesh = cfg, mesh
    mcfg = model_config(cfg)
    self.mcfg = mcfg
    seed = int(cfg.seed)
    self.tx, self.lr_schedule = optim.make_optimizer(cfg.optim, int(cfg.total_steps))
    rules = [tuple(r) for r in cfg.mesh.rules]
    min_size = int(cfg.mesh.fsdp_min_size)

    # Training from precomputed latents: the step gets the frozen encoders' outputs; no VAE / CLIP is built.
    self.encoders = not uses_latents(cfg)

    def create():
      model, frozen = world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1), encoders=self.encoders)
      _, params, rest = nnx.split(model, nnx.Param, ...)
      _, fstate = nnx.split(frozen)
      return nnx.to_pure_dict(params), rest, fstate

    abs_model, abs_frozen = nnx.eval_shape(lambda: world_model.build(
        mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1), encoders=self.encoders))
    self.graphdef = nnx.split(abs_model, nnx.Param, ...)[0]
    self.frozen_graphdef = nnx.split(abs_frozen)[0]
    abs_params, abs_rest, abs_fstate = jax.eval_shape(create)
    self.params_sh = sharding.tree_shardings(abs_params, mesh, rules, min_size)
    self.rest_sh = jax.tree.map(lambda _: sharding.replicated(mesh), abs_rest)
    self.frozen_sh = sharding.tree_shardings(abs_fstate, mesh, rules, min_size)
    self._create = jax.jit(create, out_shardings=(self.params_sh, self.rest_sh, self.frozen_sh))

    use_ema = cfg.optim.ema_decay > 0

    def make_state(params):
      st = {"step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(seed)),
            "params": params, "opt_state": self.tx.init(params)}
      if use_ema:
        st["ema"] = jax.tree.map(jnp.copy, params)
      return st

    self.abs_state = jax.eval_shape(make_state, abs_params)
    self.state_sh = sharding.tree_shardings(self.abs_state, mesh, rules, min_size)
    self._make_state = jax.jit(make_state, in_shardings=(self.params_sh,), out_shardings=self.state_sh)
    self.num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abs_params))

    from vid2world_jax.diffusion import schedules
    self.schedule = schedules.make_schedule(**mcfg.schedule.to_dict())
    step_fn = steps.make_train_step(self.graphdef, self.frozen_graphdef, cfg, self.tx, self.lr_schedule,
                                    self.schedule)
    self.abs_batch = abstract_batch(cfg, mcfg)
    self.batch_sh = {k: sharding.batch_sharding(mesh, v.ndim) for k, v in self.abs_batch.items()}
    def step_in_mesh(*args):   # traced under the mesh: activation constraints and splash's shard_map see it
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
        return step_fn(*args)

    self.step = jax.jit(step_in_mesh, in_shardings=(self.state_sh, self.frozen_sh, self.rest_sh, self.batch_sh),
                        out_shardings=(self.state_sh, sharding.replicated(mesh)), donate_argnums=(0,))

  def abstract_args(self):
    """Abstract (shape, dtype, sharding) arguments of the step: for AOT compilation and restore targets."""
    def attach(tree, sh):
      return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    _, abs_rest, abs_fstate = jax.eval_shape(self._create)
    return (attach(self.abs_state, self.state_sh), attach(abs_fstate, self.frozen_sh),
            attach(abs_rest, self.rest_sh), attach(self.abs_batch, self.batch_sh))

  def init(self, init_params: dict | None = None, *, eager: bool = False):
    """Fresh (or init_from) state; parameters are created already sharded by the jitted constructor.

    ``init_params``: trainable parameters to start from instead (a pure dict of the model's exact structure and
    shapes, e.g. an earlier stage's parameters after ``init_from.transfer_params``), placed with the shardings.
    ``eager``: build the modules op by op and then place them (no constructor compilation: minutes on a busy CPU
    for the VAE + CLIP; only where one device holds the whole model, e.g. benchmarks/accelerator_check.py).
    """
    if eager:
      seed = int(self.cfg.seed)
      model, fz = world_model.build(self.mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1), encoders=self.encoders)
      _, p, rest = nnx.split(model, nnx.Param, ...)
      params, rest, frozen = jax.device_put((nnx.to_pure_dict(p), rest, nnx.split(fz)[1]),
                                            (self.params_sh, self.rest_sh, self.frozen_sh))
    else:
      params, rest, frozen = self._create()
    if init_checkpoint(self.cfg):
      from vid2world_jax import init_from
      params, frozen = init_from.load(self.cfg, self.mcfg, params, frozen, self.params_sh, self.frozen_sh)
    if init_params is not None:
      params = place_params(init_params, params, self.params_sh)
    return self._make_state(params), rest, frozen


def uses_latents(cfg) -> bool:
  """``data.source == "latents"``: batches carry precomputed VAE moments / CLIP tokens (data/latents.py)."""
  return cfg.data.source == "latents"


def abstract_batch(cfg, mcfg) -> dict:
  """Global batch shapes of the step: frames + actions, or (latents source) the batch keys of
  ``steps.LATENT_KEYS`` + actions, all float32."""
  gb, t, a = int(cfg.data.batch_size), int(cfg.data.clip_length), int(cfg.data.action_dim)
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
  if not uses_latents(cfg):
    h, w = (int(s) for s in cfg.data.resolution)
    return {"frames": f32(gb, t, h, w, 3), "actions": f32(gb, t, a)}
  h, w = world_model.latent_hw(mcfg, cfg.data.resolution)
  out = {"latent_moments": f32(gb, t, h, w, world_model.latent_moments_channels(mcfg)), "actions": f32(gb, t, a)}
  if mcfg.context == "resampler":
    out["clip_image_tokens"] = f32(gb, *world_model.image_token_shape(mcfg))
  return out


def place_params(values: dict, like: dict, shardings: dict) -> dict:
  """``values`` (host arrays) put on ``shardings``; structure, shapes and dtypes must match ``like``."""
  try:
    jax.tree.map(lambda *_: None, values, like)
  except ValueError as e:
    raise ValueError(f"init_params do not have the model's parameter structure: {e}") from None

  def one(path, v, ref):
    if tuple(np.shape(v)) != tuple(ref.shape):
      raise ValueError(f"init_params {jax.tree_util.keystr(path)}: shape {np.shape(v)} != model {ref.shape}")
    return np.asarray(v, ref.dtype)

  return jax.device_put(jax.tree_util.tree_map_with_path(one, values, like), shardings)


# =============================================================================================================
# Preemption.

class Preemption:
  """SIGTERM sets a flag; the loop saves and exits at the next step boundary (all processes agree)."""

  def __init__(self):
    self.flag = False
    self._prev = None

  def __enter__(self):
    try:
      self._prev = signal.signal(signal.SIGTERM, self._handler)
    except ValueError:  # not the main thread: preemption handled by the caller
      self._prev = None
    return self

  def _handler(self, signum, frame):
    self.flag = True

  def __exit__(self, *exc):
    if self._prev is not None:
      signal.signal(signal.SIGTERM, self._prev)

  def reached(self) -> bool:
    if jax.process_count() == 1:
      return self.flag
    return bool(multihost_utils.process_allgather(np.int32(self.flag)).max())


# =============================================================================================================
# The loop.

def train_and_evaluate(cfg, workdir: str, *, step_callback=None, init_params: dict | None = None) -> dict:
  """Runs (or resumes) training; returns ``{"losses": {step: loss}, "last_step", "preempted", "state", ...}``.

  ``step_callback(step, metrics)`` (tests): called after each step on every process. ``init_params`` (a pure
  dict): the trainable parameters of a fresh start (``Setup.init``); ignored when resuming from a checkpoint.
  """
  t_setup = time.time()
  mesh_shape = validate_config(cfg, jax.device_count(), jax.process_count())
  mesh = sharding.make_mesh(mesh_shape)
  logging.info("process %d/%d, %d devices (%d local), mesh %s", jax.process_index(), jax.process_count(),
               jax.device_count(), jax.local_device_count(), dict(mesh.shape))
  data_iter = make_data_iterator(cfg.data)   # before the model: bad data is reported in seconds
  setup = Setup(cfg, mesh)
  writer = logging_utils.MetricWriter(workdir)
  config_json = cfg.to_json_best_effort()
  if writer.enabled:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config_json)
    writer.text("config", "```\n" + cfg.to_yaml() + "\n```" if hasattr(cfg, "to_yaml") else config_json)
  logging.info("trainable parameters: %d", setup.num_params)

  mngr = checkpointing.make_manager(workdir, keep=int(cfg.train.keep_checkpoints), cleanup_tmp=True)
  abs_state = setup.abstract_args()[0]
  try:  # newest step that verifies and restores; damaged ones are moved aside to <step>.corrupt (one line each)
    latest, state = checkpointing.restore_newest_good(mngr, abs_state, data_iter)
  except checkpointing.NoGoodCheckpoint as e:
    checkpointing.close_quietly(mngr)
    raise CheckpointError(str(e)) from None
  if latest is not None:
    logging.info("resumed from step %d in %s", latest, mngr.directory)
    _, rest, frozen = setup._create()   # non-trainable parts (RNG streams, frozen encoders)
    if init_checkpoint(cfg):  # frozen parts (VAE / CLIP) are not in the checkpoint: reload them
      from vid2world_jax import init_from
      _, frozen = init_from.load(cfg, setup.mcfg, None, frozen, None, setup.frozen_sh)
  else:
    state, rest, frozen = setup.init(init_params)
  start = int(jax.device_get(state["step"]))
  skipped = log_skip_counts(data_iter, "resumed with" if latest is not None else "at start", None)

  # Compile ahead of time (cost analysis -> MFU).
  t0 = time.time()
  compiled = setup.step.lower(*setup.abstract_args()).compile()
  flops = logging_utils.compiled_flops(compiled)
  peak = logging_utils.peak_flops_per_device(cfg.train.get("peak_flops_per_device", 0.0))
  logging.info("step compiled in %.1fs (setup %.1fs); flops/step/device %s", time.time() - t0, t0 - t_setup, flops)

  frames_per_step = int(cfg.data.batch_size) * int(cfg.data.clip_length)
  progress = logging_utils.Progress(start, int(cfg.total_steps), enabled=bool(cfg.train.progress_bar))
  losses, acc = {}, _Accum()
  preempted = False
  stop_at = int(cfg.train.get("stop_after", 0))
  last_saved = start if latest is not None else None
  t_last = time.time()
  with Preemption() as pre:
    for i in range(start, int(cfg.total_steps)):
      local = next(data_iter)
      batch = sharding.to_global({k: local[k] for k in setup.abs_batch}, mesh)
      state, metrics = compiled(state, frozen, rest, batch)
      m = jax.device_get(metrics)
      done = i + 1
      loss = float(m["loss"])
      # Non-finite loss, gradients or updated parameters: this state is never saved.
      if not all(math.isfinite(float(m[k])) for k in ("loss", "grad_norm", "param_norm")):
        _wait_or_stop(mngr, progress, writer)
        good = checkpointing.last_good_step(mngr)   # verified against its integrity record
        checkpointing.close_quietly(mngr)
        progress.close()
        writer.close()
        vals = ", ".join(f"{k}={float(m[k]):.4g}" for k in ("loss", "grad_norm", "param_norm"))
        where = (f"the last good checkpoint is step {good} in {mngr.directory}" if good is not None
                 else "no checkpoint was saved yet")
        raise NonFiniteLoss(f"non-finite training values ({vals}) at step {done}: stopping; {where}")
      losses[done] = loss
      acc.add(m)
      now = time.time()
      dt, t_last = now - t_last, now
      progress.update(1, loss=loss, steps_s=1.0 / max(dt, 1e-9), frames_s=frames_per_step / max(dt, 1e-9))
      if done % int(cfg.train.log_every) == 0 or done == int(cfg.total_steps):
        scalars = acc.result()
        sps = scalars.pop("_steps") / max(now - acc.t0, 1e-9)
        scalars.update(steps_per_sec=sps, frames_per_sec=sps * frames_per_step)
        if flops:
          scalars["model_tflops_per_sec_per_device"] = flops * sps / 1e12
          if peak:
            scalars["mfu"] = flops * sps / peak
        writer.scalars(done, scalars)
        acc = _Accum()
        skipped = log_skip_counts(data_iter, f"step {done}", skipped)
      if int(cfg.train.sample_every) and done % int(cfg.train.sample_every) == 0:
        write_samples(setup, state, rest, frozen, local, writer, done)
      if step_callback is not None:
        step_callback(done, m)
      if done % int(cfg.train.ckpt_every) == 0 or done == int(cfg.total_steps):
        _save_or_stop(mngr, done, state, data_iter, config_json, progress, writer)
        last_saved = done
      if pre.reached() or (stop_at and done >= stop_at):
        preempted = True
        if last_saved != done:
          _save_or_stop(mngr, done, state, data_iter, config_json, progress, writer)
        logging.warning("preempted: saved step %d, exiting", done)
        break
  _wait_or_stop(mngr, progress, writer)
  mngr.close()
  progress.close()
  writer.close()
  skipped = getattr(data_iter, "skip_counts", lambda: None)()
  return {"data_skipped": skipped,
          "losses": losses, "last_step": max(losses) if losses else start, "preempted": preempted,
          "start_step": start, "flops_per_step_per_device": flops, "num_params": setup.num_params,
          "state": state}


def log_skip_counts(data_iter, when: str, previous):
  """One log line with the bad data skipped so far, by reason (``data.on_bad_data="skip"``; the counts are part
  of the iterator state, so a resumed run continues them); only when they changed. Returns the counts."""
  counts = getattr(data_iter, "skip_counts", lambda: None)()
  if counts is None or counts == previous:
    return counts
  read, index = counts["read"], counts["index"]
  if read or index or previous is not None:
    total = sum((read or {}).values()) + sum(index.values())
    logging.warning("data: skipped so far (%s): %d = clips read %s + episodes at indexing %s", when, total,
                    "not tracked (worker processes)" if read is None else dict(sorted(read.items())),
                    dict(sorted(index.items())))
  return counts


def _stop_on_write_error(mngr, err, progress, writer):
  """A failed save: orbax's threads stopped quietly, the half-written step left uncommitted; one-line error."""
  checkpointing.close_quietly(mngr)
  good = checkpointing.last_good_step(mngr)
  progress.close()
  writer.close()
  where = (f"the last good checkpoint is step {good} in {mngr.directory}" if good is not None
           else "no good checkpoint was saved")
  return CheckpointError(f"{err}; stopping; {where}")


def _save_or_stop(mngr, step, state, data_iter, config_json, progress, writer):
  try:
    checkpointing.save(mngr, step, state, data_iter, config_json)
  except checkpointing.CheckpointWriteError as e:
    raise _stop_on_write_error(mngr, e, progress, writer) from None


def _wait_or_stop(mngr, progress, writer):
  try:
    checkpointing.wait(mngr)
  except checkpointing.CheckpointWriteError as e:
    raise _stop_on_write_error(mngr, e, progress, writer) from None


def write_samples(setup, state, rest, frozen, local, writer, step: int) -> None:
  """Autoregressive rollout from the first ``eval.context_frames`` frames of two clips of this host's batch,
  with their actions (EMA parameters when EMA is on); written as a gif (ground truth | generated) and to
  TensorBoard. Single-process runs only: on a multi-host job each host holds different clips."""
  if jax.process_count() > 1:
    logging.log_first_n(logging.WARNING, "sample rollouts are skipped on multi-process runs", 1)
    return
  from vid2world_jax import inference, rollout
  cfg = setup.cfg
  params = state["ema"] if "ema" in state else state["params"]
  k, n = int(cfg.eval.context_frames), min(2, local["frames"].shape[0])
  gt = np.asarray(local["frames"][:n])
  ctx = np.clip(np.round((gt[:, :k] + 1.0) * 127.5), 0, 255).astype(np.uint8)
  scfg = rollout.SamplerConfig(ddim_steps=int(cfg.train.sample_ddim_steps), guidance_scale=1.0,
                               guidance_rescale=cfg.eval.guidance_rescale, window=int(setup.mcfg.unet.temporal_length))
  sess = inference.InferenceSession.from_params(cfg, params,
                                                nnx.merge(setup.frozen_graphdef, frozen), sampler=scfg)
  acts = np.asarray(local["actions"][:n])
  _, rgb = sess.rollout_with_context(ctx, acts[:, k - 1:gt.shape[1] - 1], guidance_scale=cfg.eval.guidance_scale,
                                     seed=step, context_actions=acts[:, :k - 1])
  gen = rgb.astype(np.float32) / 127.5 - 1.0
  writer.video(step, "rollout_gt_vs_generated", np.concatenate([gt, gen], axis=3))


class _Accum:
  """Running sums of step metrics between log points (bucket losses: sum of sums / sum of counts)."""

  def __init__(self):
    self.n, self.sums, self.t0 = 0, {}, time.time()
    self.bsum = self.bcnt = None

  def add(self, m):
    self.n += 1
    for k in ("loss", "grad_norm", "param_norm", "lr"):
      self.sums[k] = self.sums.get(k, 0.0) + float(m[k])
    bs, bc = np.asarray(m["bucket_loss_sum"]), np.asarray(m["bucket_count"])
    self.bsum = bs if self.bsum is None else self.bsum + bs
    self.bcnt = bc if self.bcnt is None else self.bcnt + bc

  def result(self):
    out = {k: v / max(self.n, 1) for k, v in self.sums.items()}
    if self.bsum is not None:
      nb = len(self.bsum)
      for j in range(nb):
        if self.bcnt[j] > 0:
          out[f"loss_t{j * 1000 // nb:03d}_{(j + 1) * 1000 // nb:03d}"] = float(self.bsum[j] / self.bcnt[j])
    out["_steps"] = self.n
    return out


# =============================================================================================================
# Entry point.

def maybe_initialize_distributed() -> None:
  """Forms a multi-process job from the environment (no-op for a single process)."""
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  elif (env.get("V2W_DISTRIBUTED") == "1" or int(env.get("SLURM_NTASKS", "1")) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")):
    jax.distributed.initialize()  # Cloud TPU / SLURM cluster auto-detection


JOBS = ("train", "recipe", "demo")  # config.job values (absent = "train"); "demo" = "recipe" (older configs)


def config_job(cfg) -> str:
  """``config.job``: "train" (``train_and_evaluate``, the default) or "recipe" (the stages listed in
  ``config.recipe``, run by ``vid2world_jax.recipe``; "demo" is the same job under its older name)."""
  job = cfg.get("job", "train")
  if job not in JOBS:
    raise ConfigError(f"job must be one of {JOBS}, got {job!r}")
  if job != "train" and "recipe" not in cfg:
    raise ConfigError(f"job {job!r} needs a config.recipe block (stages, fns, prepare; see vid2world_jax.recipe)")
  return job


def run_recipe(cfg, workdir: str):
  """``config.job == "recipe"``: the config's stages (the recipe's ``prepare`` hook checks the config first)."""
  from vid2world_jax import recipe  # pylint: disable=import-outside-toplevel
  try:
    cfg = recipe.prepare(cfg)
    recipe.stages(cfg)   # every stage importable before anything runs
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return recipe.run(cfg, workdir, prepared=True)


def main(argv):
  del argv
  cfg = _CONFIG.value
  problems = [] if _WORKDIR.value else ["--workdir is required (checkpoints, logs and samples go there)"]
  try:
    job = config_job(cfg)
    if job == "train":
      check_inputs(cfg)   # data.path / init_from: one line naming the flags, before any model is built
  except ConfigError as e:
    problems.append(str(e))
  if problems:
    sys.exit("error: " + "; ".join(problems))
  if job in ("recipe", "demo"):
    try:
      run_recipe(cfg, _WORKDIR.value)
    except (ConfigError, NonFiniteLoss, CheckpointError, checkpointing.CheckpointCorrupt) as e:
      sys.exit(f"error: {e}")
    return
  maybe_initialize_distributed()
  try:
    result = train_and_evaluate(cfg, _WORKDIR.value)
  except (ConfigError, NonFiniteLoss, BadDataError, CheckpointError, checkpointing.CheckpointCorrupt) as e:
    sys.exit(f"error: {e}")
  logging.info("finished at step %d%s", result["last_step"], " (preempted)" if result["preempted"] else "")


def parse_flags(argv):
  """absl flag parsing with one-line errors (unknown config field, bad override value, missing flag)."""
  from vid2world_jax import user_input  # pylint: disable=import-outside-toplevel
  return user_input.parse_flags(argv)


if __name__ == "__main__":
  # `python -m vid2world_jax.train` runs this file as __main__; modules that `import vid2world_jax.train` (a
  # recipe's stages) must get THIS module, not a second copy that would define --config / --workdir again.
  sys.modules.setdefault("vid2world_jax.train", sys.modules[__name__])
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=parse_flags)
