"""One inference session: a trained world model loaded once, rolled out from anywhere (CLI, gym envs, policy
evaluation, the demo, play).

  sess = InferenceSession.load("runs/demo")                      # or a trainer workdir / checkpoints/ / a step
  frames = sess.rollout(context_u8, actions, guidance_scale=2.5, seed=0)       # [B, T, H, W, 3] uint8
  state = sess.start(context_u8, seed=0)                          # or step by step (envs, play):
  frame, state = sess.step(state, action, guidance_scale=2.5)    # [B, H, W, 3] uint8

* Loading reads the trainable parameters only (``checkpointing.restore_params``: the EMA when the checkpoint has
  one, optionally cast to bfloat16, restored straight onto their shardings over the local devices); the config
  comes from the checkpoint's ``meta`` item when none is given.
* ``rollout`` is the jitted ``lax.scan`` of ``sampler.rollout``; ``start``/``step`` run the same per-frame
  function (``sampler.init_window`` / ``sampler.generate_frame``) one frame per call. Both derive the noise of
  frame f from ``fold_in(key(seed)_b, f)`` and carry the guidance scale as a traced value in the window state, so
  T steps at a constant scale give the frames of ``rollout`` with the same seed (tested), and the scale may
  change between steps without recompiling. The window slides after ``window`` frames at a fixed buffer size:
  memory and per-frame time do not grow with the rollout length.
* ``sample_nar``: non-autoregressive sampling (all frames denoised jointly, ``inference.nar.nar_sample``).
The model input (``world_model.unet_denoise``) and the guidance combination
(``diffusion.guidance.causal_action_guidance``) each exist once; this module only assembles them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vid2world_jax import param_tree, pixels, world_model
from vid2world_jax.diffusion import sampler_settings
from vid2world_jax.inference import loading, rollout_model
from vid2world_jax.inference import sampler as rl

# fold_in stream of a rollout key that draws the VAE posterior noise of its context (frame noise uses the
# frame indices 0, 1, ...).
ENCODE_STREAM = 2 ** 31 - 1


# ------------------------------------------------------------------------------------------------------------
# The run's sampler settings and guidance.

def sampler_config(cfg, **overrides) -> rl.SamplerConfig:
  """Sampler settings of a run, from ``config.sampler`` only (``diffusion.sampler_settings``; a config saved
  before that block existed gets the block's defaults, not its old ``demo`` / ``eval`` values); the window:
  ``window_length``. Guidance "cfg": ``guidance_scale`` = the run's scale (each call may pass another, a
  traced value); "none": ``guidance_scale=None`` (the conditional pass only, whatever scale a call passes).
  ``overrides``: any ``SamplerConfig`` field (None = keep; the command lines' sampler flags)."""
  s = sampler_settings.resolve(cfg)
  kw = dict(ddim_steps=int(s.ddim_steps), eta=float(s.eta), spacing=str(s.spacing),
            guidance_scale=float(s.guidance_scale) if s.guidance == "cfg" else None,
            guidance_rescale=float(s.guidance_rescale), history_noise=s.history_noise,
            window=window_length(cfg), final_alpha_one=bool(s.final_alpha_one))
  kw.update({k: v for k, v in overrides.items() if v is not None})
  return rl.SamplerConfig(**kw)


def step_compiler_options(cfg) -> dict | None:
  """XLA options of the per-frame step (``start``/``step``: play, the envs) on a CPU backend:
  ``config.eval.cpu_step_compiler_options`` (XLA debug-option names -> values), None elsewhere or when empty."""
  if jax.default_backend() != "cpu":
    return None
  opts = (cfg.get("eval") or {}).get("cpu_step_compiler_options")
  opts = dict(opts.to_dict() if hasattr(opts, "to_dict") else (opts or {}))
  return opts or None


def window_length(cfg) -> int:
  """Frames in the sampler's window: ``config.sampler.window``, 0 = the UNet's temporal length. Raises ValueError
  for a window longer than the UNet's temporal length."""
  length = int(cfg.model.unet.temporal_length)
  w = int(sampler_settings.resolve(cfg).window) or length
  if w > length:
    raise ValueError(f"config.sampler.window {w} exceeds the UNet's temporal length {length}")
  return w


def default_guidance(cfg) -> float:
  """The run's guidance scale: ``config.sampler.guidance_scale`` (1.0 when ``config.sampler.guidance`` is
  "none": the conditional prediction)."""
  s = sampler_settings.resolve(cfg)
  return float(s.guidance_scale) if s.guidance == "cfg" else 1.0


# ------------------------------------------------------------------------------------------------------------
# The session.

@dataclasses.dataclass
class SessionState:
  """Opaque rollout state of ``start``/``step``: the window (``rollout.WindowState``) and the batch size."""
  window: rl.WindowState
  batch: int

  @property
  def frame(self) -> int:
    """Global index of the next frame to generate (context frames count from 0)."""
    return int(self.window.frame)


class InferenceSession:
  """A trained world model ready to sample (see module doc). Build with ``load`` or ``from_params``."""

  def __init__(self, config, graphdef, state, frozen_graphdef, frozen_state, sampler: rl.SamplerConfig, *,
               cached: bool = False, allow_noncausal: bool = False):
    self.config = config
    self.model_config = mcfg = world_model.model_config(config)
    self.sampler = sampler
    self.cached = bool(cached)
    self._params = (state, frozen_state)
    self._model = rollout_model.world_model_rollout_model(mcfg, graphdef, frozen_graphdef,
                                                          allow_noncausal=allow_noncausal, cached=cached)
    h, w = (int(s) for s in config.data.resolution)
    self._frame_shape = (h, w, 3)
    self._action_dim = int(mcfg.unet.action_dim)
    fg = frozen_graphdef
    def encode(fst, x, keys):  # each rollout's frames encoded with its own key (batch-independent)
      fs = nnx.merge(fg, fst)
      enc_keys = jax.vmap(lambda k: jax.random.fold_in(k, ENCODE_STREAM))(keys)
      one = lambda xb, kb: fs.encode(pixels.from_uint8(xb[None]), kb)[0]
      return jax.vmap(one)(x, enc_keys)

    self._encode = jax.jit(encode)
    self._decode = jax.jit(lambda fst, z: pixels.to_uint8(nnx.merge(fg, fst).decode(z)))
    self._decode_unit = jax.jit(lambda fst, z: jnp.clip(nnx.merge(fg, fst).decode(z).astype(jnp.float32), -1, 1))
    model, cfg = self._model, sampler
    self._init = jax.jit(lambda c, a, k, s: rl.init_window(model, cfg, c, a, k, s))
    self._step = jax.jit(lambda p, st, a, s: rl.generate_frame(model, cfg, p, rl.push_action(st, a)._replace(
        scale=jnp.asarray(s, jnp.float32))), compiler_options=step_compiler_options(config))
    self._nar = None

  # -- construction ------------------------------------------------------------------------------------------

  @classmethod
  def load(cls, checkpoint: str, config=None, *, use_ema: bool = True, dtype=None, sampler=None,
           cached: bool | None = None, allow_noncausal: bool = False, shard: bool | None = None
           ) -> "InferenceSession":
    """From a trainer workdir, its ``checkpoints/`` folder, one step folder, or the default job's workdir.

    ``config``: the run's config (default: the one saved with the checkpoint; its sampler block is the checkpoint's
    own when it saved one, ``loading.run_config``). ``use_ema``: the EMA parameters when the checkpoint has them.
    ``dtype``: parameter/compute dtype (e.g. ``"bfloat16"``; default the run's). ``sampler``: a
    ``rollout.SamplerConfig`` (default ``sampler_config(config)``). ``cached``: the cached fast path (default
    ``config.eval.cached_rollout``, "auto": on for a strictly causal UNet, whose frames it reproduces). ``shard``:
    see ``loading.param_shardings``."""
    from vid2world_jax.storage import checkpointing
    state_dir = loading.find_state_dir(checkpoint)
    config = loading.run_config(state_dir, config)   # the checkpoint's own sampler block wins over config's
    if dtype is not None:
      config.precision = str(jnp.dtype(dtype))
    mcfg = world_model.model_config(config)
    seed = int(config.get("seed", 0))
    abs_wm, abs_fs = nnx.eval_shape(lambda: world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1)))
    _, abs_params, _ = nnx.split(abs_wm, nnx.Param, ...)
    abs_pure = nnx.to_pure_dict(abs_params)
    pdtype = None if dtype is None else jnp.dtype(dtype)
    shardings = loading.param_shardings(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, pdtype or x.dtype),
                                             abs_pure), shard)
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, pdtype or x.dtype, sharding=s), abs_pure,
                          shardings)
    params, _ = checkpointing.restore_params(state_dir, target, use_ema=use_ema)
    frozen = None
    if mcfg.first_stage == "vae" or mcfg.context == "resampler":
      frozen = loading.load_frozen(config, mcfg)
    return cls.from_params(config, params, frozen, sampler=sampler, cached=cached,
                           allow_noncausal=allow_noncausal)

  @classmethod
  def from_params(cls, config, params: dict, frozen=None, *, sampler: rl.SamplerConfig | None = None,
                  cached: bool | None = None, allow_noncausal: bool = False) -> "InferenceSession":
    """From the trainable parameters as a pure dict (``nnx.to_pure_dict`` of the ``WorldModel``'s params).

    ``config``: the run's config (``model``, ``data.resolution``, ``eval``); ``frozen``: the ``FrozenStage``
    (module or its ``nnx.State``; default built from the config: exact for ``patchify``, the VAE / CLIP weights
    need ``config.init_from``)."""
    config = ml_collections.ConfigDict(config.to_dict())
    mcfg = world_model.model_config(config)
    seed = int(config.get("seed", 0))
    abs_wm, abs_fs = nnx.eval_shape(lambda: world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1)))
    g, abs_params, abs_rest = nnx.split(abs_wm, nnx.Param, ...)
    param_tree.check_params_tree(nnx.to_pure_dict(abs_params), params, "params")
    pst = abs_params
    nnx.replace_by_pure_dict(pst, jax.tree.map(jnp.asarray, params))
    rest = jax.tree.map(lambda v: jax.random.key(seed) if jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key)
                        else jnp.zeros(v.shape, v.dtype), abs_rest)
    wm = nnx.merge(g, pst, rest)
    wm.eval()
    graphdef, state = nnx.split(wm)
    if frozen is None:
      if mcfg.first_stage == "vae" or mcfg.context == "resampler":
        frozen = loading.load_frozen(config, mcfg)
      else:
        frozen = nnx.merge(nnx.split(abs_fs)[0], jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype),
                                                               nnx.split(abs_fs)[1]))
    if isinstance(frozen, nnx.Module):
      fgraph, fstate = nnx.split(frozen)
    else:
      fgraph, fstate = nnx.split(abs_fs)[0], frozen
    if sampler is None:
      sampler = sampler_config(config)
    if cached is None:   # the fastest exact path unless the config asks otherwise
      cached = rollout_model.resolve_cached((config.get("eval") or {}).get("cached_rollout", "auto"),
                                            world_model.model_config(config),
                                            single_pass=sampler.ddim_steps == 1 and sampler.guidance_scale is None)
    return cls(config, graphdef, state, fgraph, fstate, sampler, cached=cached, allow_noncausal=allow_noncausal)

  # -- properties ----------------------------------------------------------------------------------------------

  @property
  def frame_shape(self) -> tuple[int, int, int]:
    return self._frame_shape

  @property
  def action_dim(self) -> int:
    return self._action_dim

  @property
  def context_frames(self) -> int:
    """Frames needed to start a rollout (``config.eval.context_frames``)."""
    return int((self.config.get("eval") or {}).get("context_frames", 1))

  @property
  def window(self) -> int:
    return int(self.sampler.window)

  @property
  def guidance_scale(self) -> float:
    """The run's default guidance scale (``default_guidance``: ``config.sampler.guidance_scale``)."""
    return default_guidance(self.config)

  @property
  def params(self):
    """``(world-model state, frozen state)``: the parameters of ``rollout_model``."""
    return self._params

  @property
  def rollout_model(self) -> rollout_model.RolloutModel:
    return self._model

  # -- pixels <-> latents --------------------------------------------------------------------------------------

  @staticmethod
  def rollout_keys(seed, batch: int) -> jax.Array:
    """``[B]`` PRNG keys: ``seed`` an int (split into one key per rollout, as ``rollout.rollout_keys``) or a
    sequence of B ints (one seed per rollout: rollout b then equals a batch-1 rollout with keys ``[key(s_b)]``)."""
    if np.ndim(seed) == 0:
      return rl.rollout_keys(int(seed), batch)
    seeds = np.asarray(seed)
    if seeds.shape != (batch,) or not np.issubdtype(seeds.dtype, np.integer):
      raise ValueError(f"seed must be an int or {batch} ints (one per rollout), got {seed!r}")
    return jnp.stack([jax.random.key(int(x)) for x in seeds])

  def encode(self, frames_u8, *, seed=0) -> jax.Array:
    """uint8 ``[B, T, H, W, 3]`` -> latents ``[B, T, h, w, c]`` (a VAE samples its posterior with a key derived
    from rollout b's key, see ``rollout_keys``)."""
    frames_u8 = jnp.asarray(frames_u8)
    return self._encode(self._params[1], frames_u8, self.rollout_keys(seed, frames_u8.shape[0]))

  def decode(self, latents, *, as_uint8: bool = True) -> np.ndarray:
    """latents ``[B, T, h, w, c]`` -> uint8 ``[B, T, H, W, 3]`` (``as_uint8=False``: float32 in [-1, 1], not
    quantised, for metrics)."""
    fn = self._decode if as_uint8 else self._decode_unit
    return np.asarray(fn(self._params[1], jnp.asarray(latents)))

  # -- autoregressive rollout ----------------------------------------------------------------------------------

  def _check_context(self, context_u8, context_actions):
    ctx = np.asarray(context_u8)
    if ctx.ndim != 5 or tuple(ctx.shape[2:]) != self._frame_shape or ctx.dtype != np.uint8:
      raise ValueError(f"context must be uint8 [B, k, {', '.join(map(str, self._frame_shape))}], got "
                       f"{ctx.dtype} {ctx.shape}")
    b, k = ctx.shape[:2]
    if k < 1:
      raise ValueError("at least one context frame is required")
    if context_actions is None:
      context_actions = np.zeros((b, k - 1, self._action_dim), np.float32)
    ca = np.asarray(context_actions, np.float32)
    if ca.shape != (b, k - 1, self._action_dim):
      raise ValueError(f"context_actions must be [B, k - 1, A] = [{b}, {k - 1}, {self._action_dim}], got "
                       f"shape {ca.shape}")
    return ctx, ca

  def latent_rollout(self, context_latents, actions, *, guidance_scale: float | None, seed: int,
                     horizon: int | None = None, progress=None) -> jax.Array:
    """``rollout.rollout`` on latents: ``[B, k, h, w, c]`` + all actions ``[B, >= k + horizon - 1, A]`` ->
    ``[B, k + horizon, h, w, c]``. ``guidance_scale=None``: the conditional pass only."""
    ctx = jnp.asarray(context_latents)
    cfg = self.sampler if guidance_scale is not None else dataclasses.replace(self.sampler, guidance_scale=None)
    keys = self.rollout_keys(seed, ctx.shape[0])
    return rl.rollout(self._model, cfg, self._params, ctx, jnp.asarray(actions, jnp.float32), keys, horizon=horizon,
                      progress=progress, guidance_scale=guidance_scale)

  def rollout(self, context_u8, actions, *, guidance_scale: float | None, seed: int, context_actions=None,
              progress=None) -> np.ndarray:
    """``context_u8 [B, k, H, W, 3]`` + ``actions [B, T, A]`` (``actions[:, t]`` taken at the newest frame, it
    leads to generated frame t) -> the T generated frames, uint8 ``[B, T, H, W, 3]``. ``context_actions``
    ``[B, k - 1, A]``: the actions between the context frames (default zeros). ``guidance_scale=None``: the
    conditional pass only (half the work; scale 1 gives the same prediction through both passes)."""
    k = np.shape(context_u8)[1] if np.ndim(context_u8) == 5 else 0
    return self.rollout_with_context(context_u8, actions, guidance_scale=guidance_scale, seed=seed,
                                     context_actions=context_actions, progress=progress)[1][:, k:]

  def rollout_with_context(self, context_u8, actions, *, guidance_scale: float | None, seed: int,
                           context_actions=None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """``rollout`` returning ``(latents [B, k + T, h, w, c], frames uint8 [B, k + T, H, W, 3])``: the context
    (frames verbatim) followed by the generated frames. ``progress(frames done)``: optional host callback."""
    ctx, ca = self._check_context(context_u8, context_actions)
    acts = np.asarray(actions, np.float32)
    if acts.ndim != 3 or acts.shape[0] != ctx.shape[0] or acts.shape[2] != self._action_dim or acts.shape[1] < 1:
      raise ValueError(f"actions must be [B, T >= 1, A] = [{ctx.shape[0]}, T, {self._action_dim}], got shape "
                       f"{acts.shape}")
    lat = self.encode(ctx, seed=seed)
    out = self.latent_rollout(lat, np.concatenate([ca, acts], axis=1), guidance_scale=guidance_scale, seed=seed,
                              horizon=acts.shape[1], progress=progress)
    k = ctx.shape[1]
    return np.asarray(out), np.concatenate([ctx, self.decode(out[:, k:])], axis=1)

  def start(self, context_u8, *, seed: int, context_actions=None) -> SessionState:
    """Opaque rollout state from the context frames (``[B, k, H, W, 3]`` uint8); see ``step``."""
    ctx, ca = self._check_context(context_u8, context_actions)
    lat = self.encode(ctx, seed=seed)
    keys = self.rollout_keys(seed, ctx.shape[0])
    with rl.noise_mode():
      win = self._init(lat, jnp.asarray(ca), keys, jnp.float32(1.0))
    return SessionState(win, int(ctx.shape[0]))

  def step(self, state: SessionState, action, *, guidance_scale: float) -> tuple[np.ndarray, SessionState]:
    """Takes ``action [B, A]`` at the newest frame: returns the next frame (uint8 ``[B, H, W, 3]``) and the new
    state. The guidance scale may change between steps (a traced value: no recompilation)."""
    if not isinstance(state, SessionState):
      raise ValueError(f"state must come from start() or step(), got {type(state).__name__}")
    a = np.asarray(action, np.float32)
    if a.shape != (state.batch, self._action_dim):
      raise ValueError(f"action must be [B, A] = [{state.batch}, {self._action_dim}], got shape {a.shape}")
    if guidance_scale is None:
      raise ValueError("step needs a guidance_scale (1.0 = the conditional prediction)")
    with rl.noise_mode():
      x, win = self._step(self._params, state.window, jnp.asarray(a), jnp.float32(guidance_scale))
    return self.decode(x[:, None])[:, 0], SessionState(win, state.batch)

  # -- non-autoregressive sampling -----------------------------------------------------------------------------

  def sample_nar(self, context_u8, actions, *, guidance_scale: float, seed: int) -> np.ndarray:
    """Non-autoregressive sampling (Vid2World-NAR): frame 0 = ``context_u8 [B, H, W, 3]`` (or ``[B, 1, H, W,
    3]``), the ``T = actions.shape[1]`` following frames denoised jointly (``actions [B, T, A]``, ``actions[:, t]``
    leads to frame t + 1). Needs ``T + 1 <= window``. Returns uint8 ``[B, T, H, W, 3]``."""
    ctx = np.asarray(context_u8)
    if ctx.ndim == 4:
      ctx = ctx[:, None]
    ctx, _ = self._check_context(ctx[:, :1], None)
    acts = np.asarray(actions, np.float32)
    if acts.ndim != 3 or acts.shape[0] != ctx.shape[0] or acts.shape[2] != self._action_dim:
      raise ValueError(f"actions must be [B, T, A] with B={ctx.shape[0]}, A={self._action_dim}, got {acts.shape}")
    lat = self.nar_latents(self.encode(ctx, seed=seed)[:, 0], acts, guidance_scale=guidance_scale, seed=seed,
                           frames=acts.shape[1] + 1)
    return self.decode(lat[:, 1:])

  def nar_latents(self, context_latent, actions, *, guidance_scale: float, seed: int, frames: int) -> jax.Array:
    """``nar.nar_sample`` of these parameters: ``[B, h, w, c]`` + actions ``[B, >= frames - 1, A]`` (the
    action taken at each frame) -> ``[B, frames, h, w, c]`` (frame 0 = the context latent)."""
    from vid2world_jax.inference import nar  # pylint: disable=import-outside-toplevel
    if frames > self.window:
      raise ValueError(f"non-autoregressive sampling of {frames} frames needs frames <= window {self.window}")
    if self._nar is None:
      base, cfg, params = self._model, self.sampler, self._params   # NAR: its whole-window call
      self._nar = jax.jit(lambda ctx, acts, s, key, t: nar.nar_sample(base, cfg, params, ctx, acts, s, key, t,
                                                                           cfg.guidance_rescale),
                          static_argnums=(4,))
    if self.sampler.guidance_scale is None:   # config.sampler.guidance "none": the conditional prediction
      guidance_scale = 1.0
    acts = jnp.asarray(actions, jnp.float32)
    acts = jnp.concatenate([acts, jnp.zeros_like(acts[:, :1])], axis=1)[:, :frames]  # actions[:, frames-1] unused
    return self._nar(jnp.asarray(context_latent), acts, jnp.float32(guidance_scale), jax.random.key(int(seed)),
                     int(frames))
