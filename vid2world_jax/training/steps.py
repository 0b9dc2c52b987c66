"""Pure training step: Diffusion-Forcing loss, gradients (with accumulation), AdamW update, EMA, metrics.

No I/O. ``make_train_step`` returns ``train_step(state, frozen, rest, batch) -> (state, metrics)``, meant to be
wrapped in ``jax.jit`` with explicit shardings by ``train.py`` (and by tests / the memory plan).

``state``: ``{"step": int32 [], "rng": uint32 [2] (raw key data), "params": pure dict, "opt_state": optax
state, "ema": pure dict (only when EMA is on)}``. ``frozen``: nnx.State of the FrozenStage; ``rest``: nnx.State
of the WorldModel's non-parameter variables (RNG streams; reseeded every step from ``rng`` and ``step``).
``batch``: ``{"frames": [B, T, H, W, 3] in [-1, 1], "actions": [B, T, A]}`` (actions unused by a video-only
model, ``model.unet.action_dim`` 0); or, training from precomputed latents (``data.source="latents"``, see
``data/latents.py``), the frozen encoders' outputs instead of frames: ``{"latent_moments": [B, T, h, w, 2c]``
(VAE posterior ``concat(mean, logvar)``; patchify: the latents ``[B, T, h, w, c]``), ``"clip_image_tokens":
[B, N, W]`` (frozen CLIP image tokens of frame 0, before the trainable resampler; resampler context only),
``"actions"}``. The latents are then sampled with the same ``first_stage`` key as in-step encoding, so the
step is the same function of the data; ``frozen`` holds no VAE / CLIP image encoder in that mode
(``world_model.build(..., encoders=False)``), only the empty-prompt text context. ``config.train.noise_levels``: a noise level per frame (Diffusion Forcing) or
one per clip (video-diffusion pretraining).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vid2world_jax.training import optim


def step_rngs(state_rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
  """Per-step keys from ``fold_in(rng, step)``: identical whether or not the run was interrupted."""
  key = jax.random.fold_in(jax.random.wrap_key_data(state_rng), step)
  names = ("noise", "action_mask", "dropout", "first_stage")
  return dict(zip(names, jax.random.split(key, len(names))))


NOISE_LEVELS = ("per_frame", "per_clip", "history")
LATENT_KEYS = ("latent_moments", "clip_image_tokens")   # batch keys of precomputed frozen-encoder outputs


def uses_latents(batch) -> bool:
  """True when the batch carries precomputed encoder outputs (``latent_moments``) instead of frames."""
  return "latent_moments" in batch


def sample_noise_levels(key: jax.Array, batch: int, frames: int, num_timesteps: int, mode: str,
                        history_prob: float = 0.5, history_max_level: int = 200) -> jax.Array:
  """``[B, T]`` int32 noise levels: "per_frame" = Diffusion Forcing (every frame its own level, spec §3.1);
  "per_clip" = the usual video-diffusion objective (one level shared by all frames of a clip); "history" =
  per-frame levels where a fraction ``history_prob`` of the samples has a lightly noised history
  (``diffusion_forcing.sample_history_timesteps``)."""
  from vid2world_jax.diffusion import diffusion_forcing
  if mode == "per_frame":
    return diffusion_forcing.sample_frame_timesteps(key, batch, frames, num_timesteps)
  if mode == "history":
    return diffusion_forcing.sample_history_timesteps(key, batch, frames, num_timesteps, prob=history_prob,
                                                      max_history_level=history_max_level)
  if mode == "per_clip":
    t = jax.random.randint(key, (batch, 1), 0, num_timesteps, jnp.int32)
    return jnp.broadcast_to(t, (batch, frames))
  raise ValueError(f"noise levels must be one of {NOISE_LEVELS}, got {mode!r}")


OBJECTIVES = ("diffusion_forcing", "student")


def student_plan(cfg, num_timesteps: int) -> tuple:
  """``(taus, t_small)`` the student trains for: the DDIM timesteps and history noise of ``config.sampler`` (the
  settings it will be sampled with)."""
  from vid2world_jax.diffusion import ddim, sampler_settings
  from vid2world_jax.diffusion import student as student_lib
  s = sampler_settings.resolve(cfg)
  taus = student_lib.student_timesteps(int(s.ddim_steps), num_timesteps, str(s.spacing))
  return taus, ddim.history_timestep(taus, s.history_noise, num_timesteps)


def student_window_length(cfg) -> int:
  """Frames per training window of the student: its sampler's window (``config.sampler.window``, 0 = the UNet's
  temporal length, which is then the clip length)."""
  from vid2world_jax.diffusion import sampler_settings
  return int(sampler_settings.resolve(cfg).window) or int(cfg.data.clip_length)


def make_loss_fn(graphdef, frozen_graphdef, cfg, schedule) -> Callable:
  """``loss_fn(params, frozen, rest, batch, keys) -> (loss, aux)`` for one (micro-)batch."""
  from vid2world_jax.diffusion import actions as actions_lib
  from vid2world_jax.diffusion import diffusion_forcing

  compute_dtype = jnp.dtype(cfg.precision)
  p_drop = float(cfg.train.action_dropout_prob)
  noise_levels = cfg.train.get("noise_levels", "per_frame")
  use_actions = int(cfg.model.unet.action_dim) > 0   # action_dim 0: a video-only model, the batch's actions unused
  objective = cfg.train.get("objective", "diffusion_forcing")
  if objective not in OBJECTIVES:
    raise ValueError(f"train.objective must be one of {OBJECTIVES}, got {objective!r}")
  if objective == "student":
    from vid2world_jax.diffusion import student as student_lib
    student_taus, student_t_small = student_plan(cfg, schedule.num_timesteps)
    student_len = student_window_length(cfg)

  def loss_fn(params, frozen, rest, batch, keys):
    if compute_dtype != jnp.float32:
      params = optim.cast_floats(params, compute_dtype)   # fp32 master weights -> bf16 compute copy
    model = nnx.merge(graphdef, nnx.State(params), rest, copy=True)  # fresh Variables: reseed may mutate
    nnx.reseed(model, dropout=keys["dropout"])
    fs = nnx.merge(frozen_graphdef, frozen)
    if objective == "student":   # windows of the student's sampler length (sub-clips when shorter than the clip)
      batch = student_lib.crop_clips(jax.random.fold_in(keys["noise"], 1), batch, student_len,
                                     anchored="clip_image_tokens" in batch)
    # First stage and its inputs are frozen: no gradient flows into them.
    if uses_latents(batch):   # precomputed encoder outputs: no VAE / CLIP in the step
      moments = batch["latent_moments"]
      b, t = moments.shape[:2]
      x0 = jax.lax.stop_gradient(fs.latents_from_moments(moments, keys["first_stage"]).astype(jnp.float32))
      context = model.context_from_tokens(fs, batch.get("clip_image_tokens"), b)
    else:
      frames = batch["frames"]
      b, t = frames.shape[:2]
      x0 = jax.lax.stop_gradient(fs.encode(frames, keys["first_stage"]).astype(jnp.float32))
      context = model.context(fs, frames[:, 0])
    cond = {"concat": x0[:, 0].astype(compute_dtype),               # frame-0 latent, repeated over T by the UNet
            "context": context.astype(compute_dtype)}
    acts = mask = None
    if use_actions:
      acts = actions_lib.align_actions(batch["actions"]).astype(compute_dtype)   # a'_0 = 0, a'_f = a_{f-1}
      mask = actions_lib.sample_action_mask(keys["action_mask"], b, t, p_drop)   # per-frame action dropout

    def denoise_fn(x_t, t_bt):
      out = model.denoise(x_t.astype(compute_dtype), t_bt, cond, acts, mask)
      return out.astype(jnp.float32)

    if objective == "student":   # the few-step student (diffusion.student): one target frame per clip
      win_fn = lambda lat, t_bt, m: model.denoise(lat.astype(compute_dtype), t_bt, cond, acts,
                                                  m if use_actions else None).astype(jnp.float32)
      loss, aux = student_lib.student_loss(win_fn, schedule, x0, keys["noise"], student_taus, student_t_small)
      sums, counts = diffusion_forcing.bucket_losses(aux["frame_loss"][:, None], aux["tau"][:, None],
                                                     jnp.ones((b, 1), jnp.float32), schedule.num_timesteps)
      return loss, {"bucket_loss_sum": sums, "bucket_count": counts}

    # per_frame: every frame (frame 0 included) gets its own noise level, context frames are not kept clean
    # (spec §3.1); drawn inside the loss from its own split of the noise key. per_clip: one level per clip.
    levels = None
    if noise_levels != "per_frame":
      k_t, _ = jax.random.split(keys["noise"])
      levels = sample_noise_levels(k_t, b, t, schedule.num_timesteps, noise_levels,
                                   float(cfg.train.get("history_prob", 0.5)),
                                   int(cfg.train.get("history_max_level", 200)))
    loss, aux = diffusion_forcing.diffusion_forcing_loss(denoise_fn, schedule, x0, keys["noise"], t=levels)
    # Per-noise-level bucket sums / counts: summed over micro-batches and log intervals, divided on the host.
    return loss, {"bucket_loss_sum": aux["bucket_loss_sum"], "bucket_count": aux["bucket_count"]}

  return loss_fn


def _split_micro(batch: dict, k: int) -> dict:
  """``[B, ...] -> [k, B/k, ...]`` where micro-batch j holds rows j, j+k, ...: each keeps the data sharding."""
  def one(x):
    b = x.shape[0]
    if b % k:
      raise ValueError(f"batch {b} not divisible by grad_accum_steps {k}")
    return jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)
  return jax.tree.map(one, batch)


def make_train_step(graphdef, frozen_graphdef, cfg, tx: optax.GradientTransformation,
                    lr_schedule: optax.Schedule, schedule) -> Callable:
  loss_fn = make_loss_fn(graphdef, frozen_graphdef, cfg, schedule)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  accum = int(cfg.optim.grad_accum_steps)
  ema_decay = float(cfg.optim.ema_decay)

  def train_step(state, frozen, rest, batch):
    keys = step_rngs(state["rng"], state["step"])
    params = state["params"]
    if accum == 1:
      (loss, aux), grads = grad_fn(params, frozen, rest, batch, keys)
    else:
      micro = _split_micro(batch, accum)

      def body(carry, xs):
        g_sum, l_sum, a_sum = carry
        mb, j = xs
        mkeys = {n: jax.random.fold_in(k, j) for n, k in keys.items()}
        (l, a), g = grad_fn(params, frozen, rest, mb, mkeys)
        return (jax.tree.map(jnp.add, g_sum, g), l_sum + l, jax.tree.map(jnp.add, a_sum, a)), None

      zeros_g = jax.tree.map(jnp.zeros_like, params)
      aux_shape = jax.eval_shape(lambda: grad_fn(params, frozen, rest, jax.tree.map(lambda x: x[0], micro),
                                                 keys)[0][1])
      zeros_a = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
      (grads, loss, aux), _ = jax.lax.scan(body, (zeros_g, jnp.zeros((), jnp.float32), zeros_a),
                                           (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss = loss / accum
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    new_state = dict(state, step=state["step"] + 1, params=new_params, opt_state=opt_state)
    if "ema" in state:
      new_state["ema"] = optim.ema_update(state["ema"], new_params, ema_decay)
    metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": optax.global_norm(new_params),
               "lr": lr_schedule(state["step"]), **aux}
    return new_state, metrics

  return train_step
