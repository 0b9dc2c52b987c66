"""The default run, stages (a)-(d), each cached in the workdir (a stage whose outputs exist is skipped).

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo

(a) ``pretrain/``: a tiny BIDIRECTIONAL video diffusion model (symmetric temporal convs, non-causal temporal
    attention, GroupNorm over time, no action encoder) of the same architecture as the world model, trained on the
    videos alone (one noise level per clip, the usual video-diffusion objective, first-frame concat conditioning).
(b) ``finetune/``: the causal world model (config.model) initialised from (a): every parameter with the same path
    and shape is copied, temporal-conv kernels go through the configured weight transfer (shift | mask | mixed,
    spec §2.2), the action encoder is new; then Diffusion-Forcing fine-tuning with per-frame action dropout using
    the trainer's jitted step (``train.Setup``).
(c) ``eval/``: held-out embedded episodes rolled out from their first frame and real actions (causal action
    guidance, ``rollout.rollout``), plus a guidance-scale sweep and a shuffled-actions control; optionally
    (``demo.policy_eval.enabled``) scripted policies run in the real simulator and inside the world model.
(d) ``report/``: GIFs ``ground truth | prediction | copy-last-frame``, metrics.md/json, plots; a one-screen
    summary is printed.

Guidance scale is passed to the sampler as a traced value (``GuidanceDenoiser``) so the whole sweep, the shuffled
actions control and the main evaluation share one compilation; scale 1 is exactly "no guidance" (the guided
combination returns the conditional prediction bit-exactly and the CFG rescale ratio is 1).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx, traverse_util

from vid2world_jax import rollout as rl
from vid2world_jax.diffusion import guidance as guidance_lib
from vid2world_jax.metrics import world_model_metrics as wmm

# =============================================================================================================
# Config.


def default_demo_config() -> ml_collections.ConfigDict:
  """The ``config.demo`` block (every knob of the default run)."""
  d = ml_collections.ConfigDict()
  # Defaults sized for <= 20 min on 2 CPU cores (docs/demo_results.md has the measured stage times).
  d.pretrain = "shipped"            # stage (a): "shipped" = the pretrained VDM file in vid2world_jax/demo/assets
  #                                   (made by `python -m vid2world_jax.demo.export_pretrained`, README), as the
  #                                   original downloads DynamiCrafter | "run" = pretrain here (demo.pretrain_steps)
  d.pretrain_asset = "breakout_vdm.npz"  # file name under vid2world_jax/demo/assets (or an absolute path)
  d.pretrain_steps = 300            # stage (a) with pretrain="run": video-only bidirectional pretraining steps
  d.pretrain_lr = 2e-3              # stage (a) AdamW peak lr (other optimizer fields from config.optim)
  d.pretrain_warmup = 20            # stage (a) linear warmup steps
  d.finetune_steps = 300            # stage (b): Diffusion-Forcing fine-tune steps (config.total_steps is ignored)
  d.init = "pretrained"             # stage (b) start: "pretrained" (stage a + transfer) | "scratch" (random)
  d.weight_transfer = "mixed"       # temporal-conv transfer: "shift" | "mask" | "mixed" (= extrapolative)
  d.eval_clips = 8                  # held-out clips (test split, one per episode, cycling with new starts)
  d.eval_batch = 8                  # rollouts per sampler call (fixed shape: one compilation)
  d.ddim_steps = 5                  # DDIM steps per generated frame
  d.eta = 1.0                       # DDIM eta (1 as in the paper's evaluations; measured +0.4 dB PSNR over eta 0
  #                                   at 5 steps on the default model; noise is seeded, so runs are repeatable)
  d.final_alpha_one = True          # last DDIM step to alpha-bar 1 (no residual sqrt(1-ab[0]) noise; matters at few
  #                                   steps; False = DynamiCrafter's convention)
  d.guidance_scale = 2.5            # causal action guidance s of the main evaluation (1 = no guidance)
  d.guidance_rescale = 0.7          # CFG rescale phi
  d.guidance_sweep = (1.0, 2.5, 4.0)  # scales of the sweep (1.0 = no guidance)
  d.history_noise = 100             # t_small of history frames: "second_last" DDIM step or an int (100 = the
  #                                   second-last step of a 10-step plan, kept fixed as ddim_steps is lowered)
  d.long_horizon = 4                # long-horizon rollouts to this many training windows (0 = off; point 4)
  d.long_horizon_clips = 8          # held-out episodes long enough for them (fewer if the split has fewer)
  d.strict = False                  # True: exit non-zero (after the table of shortfalls) when a point of the
  #                                   quality bar (action following, copy-last, policy ranking, long horizon) fails
  d.video_scale = 6                 # report GIFs upscaled by this integer factor (32 px frames -> 192 px)
  d.num_videos = 6                  # GIFs written to the report
  d.seed = 0                        # sampling seed (model/data seeds: config.seed / config.data.seed)
  d.progress = True                 # tqdm bars
  # Policy evaluation (paper §5.1 analogue on the embedded simulator).
  d.policy_eval = ml_collections.ConfigDict()
  d.policy_eval.enabled = True      # run stage (c') in the default run
  d.policy_eval.policies = ("tracker", "tracker_eps0.25", "tracker_eps0.5", "random")  # breakout.POLICIES names
  #                                   (metaworld: simulator.POLICIES, e.g. "expert", "expert_noise2.0", "random")
  d.policy_eval.episodes = 8        # initial states per policy (seeds first_seed + k, unseen in training)
  d.policy_eval.first_seed = 5000   # seed of the first initial state
  d.policy_eval.horizon = 24        # at most this many actions (Breakout episodes end earlier when the ball is missed)
  d.policy_eval.ddim_steps = 3      # DDIM steps per frame in the policy rollouts (cost: episodes x horizon x steps)
  d.policy_eval.verifier_size = 16  # metaworld only: success verifier on size x size downsampled frames
  # Ablation driver (vid2world_jax.demo.ablations).
  d.ablations = ml_collections.ConfigDict()
  d.ablations.finetune_steps = 0    # fine-tune steps of every variant (0 = demo.finetune_steps)
  d.ablations.transfers = ("shift", "mask", "mixed")  # weight-transfer variants from the pretrained model
  d.ablations.scratch = True        # also fine-tune from random init (same steps)
  d.ablations.nar = True            # also sample non-autoregressively (all frames jointly, shared timestep)
  return d


def with_demo(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of ``config`` with a complete ``demo`` block (defaults filled in for missing fields)."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  full = default_demo_config()
  if "demo" in cfg and cfg.demo is not None:
    _merge(full, cfg.demo)
  cfg.demo = full
  return cfg


def _merge(dst, src):
  for k, v in src.items():
    if isinstance(v, ml_collections.ConfigDict) and k in dst and isinstance(dst[k], ml_collections.ConfigDict):
      _merge(dst[k], v)
    else:
      dst[k] = v


def check_demo_config(cfg) -> None:
  d = cfg.demo
  if d.init not in ("pretrained", "scratch"):
    raise ValueError(f"demo.init must be 'pretrained' or 'scratch', got {d.init!r}")
  from vid2world_jax.models import weight_transfer
  weight_transfer.canonical_mode(d.weight_transfer)
  if d.eval_clips < 1 or d.eval_batch < 1:
    raise ValueError("demo.eval_clips and demo.eval_batch must be >= 1")
  if cfg.data.clip_length < 2:
    raise ValueError("data.clip_length must be >= 2 (context frame + at least one predicted frame)")
  if not d.guidance_sweep:
    raise ValueError("demo.guidance_sweep must list at least one scale")


def bidirectional_model_config(mcfg) -> ml_collections.ConfigDict:
  """The pretrained-VDM model config: same architecture, DynamiCrafter's non-causal options, no actions."""
  m = ml_collections.ConfigDict(mcfg.to_dict())
  u = m.unet
  u.use_causal_attention = False
  if "causal_temporal_attention" in u:
    u.causal_temporal_attention = False
  u.causal_init_attn = False
  u.temporal_conv_padding = "symmetric"
  u.temporal_norm = "joint"
  u.action_dim = 0
  return m


# =============================================================================================================
# Small helpers.


def _tqdm(total, desc, enabled):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True)


def _save(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    pickle.dump(obj, f)
  os.replace(tmp, path)


def _load(path):
  with open(path, "rb") as f:
    return pickle.load(f)


def _to_numpy(tree):
  return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _log(msg):
  print(f"[demo] {msg}", flush=True)


# =============================================================================================================
# Stage (a): bidirectional, video-only pretraining.


def pretrain(cfg, workdir: str) -> dict:
  """Trains (or loads) the bidirectional VDM. Returns ``{"params", "losses", "model_config", "seconds"}``."""
  from vid2world_jax import optim, train, world_model
  from vid2world_jax.diffusion import diffusion_forcing, schedules

  path = os.path.join(workdir, "pretrain", "params.pkl")
  if os.path.exists(path):
    _log(f"stage (a) pretrain: cached {path}")
    return _load(path)
  d = cfg.demo
  t0 = time.time()
  mcfg = bidirectional_model_config(train.model_config(cfg))
  if d.pretrain == "shipped":
    from vid2world_jax.demo import pretrained_asset  # pylint: disable=import-outside-toplevel
    out = pretrained_asset.load(pretrained_asset.asset_path(d.pretrain_asset), mcfg)
    _log(f"stage (a) pretrain: the shipped pretrained VDM {d.pretrain_asset} ({out['steps']} steps, "
         f"made by: {out['command']})")
    out["seconds"] = time.time() - t0
    _save(path, out)
    return out
  if d.pretrain != "run":
    raise ValueError(f"demo.pretrain must be 'shipped' or 'run', got {d.pretrain!r}")
  seed = int(cfg.seed)
  wm, fs = world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  graphdef, params, rest = nnx.split(wm, nnx.Param, ...)
  fgraph, fstate = nnx.split(fs)
  params = nnx.to_pure_dict(params)
  ocfg = ml_collections.ConfigDict(cfg.optim.to_dict())
  ocfg.lr, ocfg.warmup_steps = float(d.pretrain_lr), int(d.pretrain_warmup)
  steps = int(d.pretrain_steps)
  tx, _ = optim.make_optimizer(ocfg, max(steps, 1))
  opt_state = tx.init(params)
  schedule = schedules.make_schedule(**mcfg.schedule.to_dict())

  def loss_fn(p, frames, key):
    model = nnx.merge(graphdef, nnx.State(p), rest, copy=True)
    kd, kt, kn, kf = jax.random.split(key, 4)
    nnx.reseed(model, dropout=kd)
    frozen = nnx.merge(fgraph, fstate)
    x0 = jax.lax.stop_gradient(frozen.encode(frames, kf).astype(jnp.float32))
    b, t = x0.shape[:2]
    # The usual video-diffusion objective: ONE noise level per clip (not per frame), no actions.
    tt = jnp.broadcast_to(jax.random.randint(kt, (b, 1), 0, schedule.num_timesteps, jnp.int32), (b, t))
    cond = {"concat": x0[:, 0], "context": model.context(frozen, frames[:, 0])}
    loss, _ = diffusion_forcing.diffusion_forcing_loss(
        lambda x, ts: model.denoise(x, ts, cond, None, None).astype(jnp.float32), schedule, x0, kn, t=tt)
    return loss

  @jax.jit
  def step(p, o, frames, key):
    loss, g = jax.value_and_grad(loss_fn)(p, frames, key)
    upd, o = tx.update(g, o, p)
    return optimizer_apply(p, upd), o, loss

  it = train.make_data_iterator(cfg.data)
  key = jax.random.key(seed + 17)
  losses = []
  with _tqdm(steps, "(a) pretrain bidirectional VDM (videos only)", bool(d.progress)) as bar:
    for i in range(steps):
      batch = next(it)
      params, opt_state, loss = step(params, opt_state, jnp.asarray(batch["frames"]), jax.random.fold_in(key, i))
      losses.append(float(loss))
      bar.update(1)
      bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
  out = {"params": _to_numpy(params), "losses": losses, "model_config": mcfg.to_dict(),
         "seconds": time.time() - t0, "source": "run", "steps": steps}
  _save(path, out)
  return out


def optimizer_apply(params, updates):
  import optax  # pylint: disable=import-outside-toplevel
  return optax.apply_updates(params, updates)


# =============================================================================================================
# Stage (b): causal conversion + Diffusion-Forcing fine-tuning.


def transfer_params(target: dict, source: dict, mode: str) -> tuple[dict, dict]:
  """Copies ``source`` (bidirectional VDM) into ``target`` (causal world model) pure dicts.

  Same path and shape -> copied; temporal-conv kernels (``is_temporal_conv_kernel``) -> weight transfer
  ``mode`` on the taps axis; target-only parameters (the action encoder) and shape mismatches keep their fresh init.
  Returns ``(new target, report)``.
  """
  from vid2world_jax.conversion.dynamicrafter import is_temporal_conv_kernel
  from vid2world_jax.models import weight_transfer
  ft = traverse_util.flatten_dict(target)
  fs = traverse_util.flatten_dict(source)
  rep = {"copied": 0, "transferred": 0, "new": [], "unused": sorted(".".join(map(str, k)) for k in set(fs) - set(ft))}
  out = {}
  for path, v in ft.items():
    if path not in fs:
      out[path] = np.asarray(v)
      rep["new"].append(".".join(map(str, path)))
      continue
    w = np.asarray(fs[path])
    if w.shape != tuple(v.shape):  # e.g. an input layer that gained action inputs: keeps its fresh init
      out[path] = np.asarray(v)
      rep["new"].append(".".join(map(str, path)) + f" (shape {w.shape} -> {tuple(v.shape)})")
      continue
    if is_temporal_conv_kernel(path) and w.ndim >= 3 and w.shape[0] == 3:
      w = np.asarray(weight_transfer.transfer_kernel(w, mode, axis=0))
      rep["transferred"] += 1
    else:
      rep["copied"] += 1
    out[path] = w.astype(np.asarray(v).dtype)
  return traverse_util.unflatten_dict(out), rep


def finetune(cfg, workdir: str, *, name: str = "finetune", init: str | None = None, transfer: str | None = None,
             steps: int | None = None, pretrained: dict | None = None) -> dict:
  """Fine-tunes (or loads) the causal action-conditioned world model with the trainer's step.

  Returns ``{"params", "losses", "transfer_report", "seconds", "init", "transfer", "steps"}``.
  """
  from vid2world_jax import sharding, train

  d = cfg.demo
  init = d.init if init is None else init
  transfer = d.weight_transfer if transfer is None else transfer
  steps = int(d.finetune_steps if steps is None else steps)
  path = os.path.join(workdir, name, "params.pkl")
  if os.path.exists(path):
    _log(f"stage (b) {name}: cached {path}")
    return _load(path)
  t0 = time.time()
  fcfg = ml_collections.ConfigDict(cfg.to_dict())
  fcfg.total_steps = max(steps, 1)
  mesh = sharding.make_mesh(train.validate_config(fcfg, jax.device_count(), jax.process_count()))
  setup = train.Setup(fcfg, mesh)
  params, rest, frozen = setup._create()  # pylint: disable=protected-access
  rep = {}
  if init == "pretrained":
    if pretrained is None:
      pretrained = pretrain(cfg, workdir)
    new, rep = transfer_params(_to_numpy(params), pretrained["params"], transfer)
    params = jax.device_put(new, setup.params_sh)
    _log(f"stage (b) {name}: {rep['copied']} tensors copied, {rep['transferred']} temporal-conv kernels "
         f"transferred ({transfer}), {len(rep['new'])} new (action encoder)")
  elif init != "scratch":
    raise ValueError(f"init must be 'pretrained' or 'scratch', got {init!r}")
  state = setup._make_state(params)  # pylint: disable=protected-access
  it = train.make_data_iterator(fcfg.data)
  losses = []
  desc = f"(b) fine-tune world model [{name}: {init}{', ' + transfer if init == 'pretrained' else ''}]"
  with _tqdm(steps, desc, bool(d.progress)) as bar:
    for _ in range(steps):
      local = next(it)
      batch = sharding.to_global({"frames": local["frames"], "actions": local["actions"]}, mesh)
      state, m = setup.step(state, frozen, rest, batch)
      losses.append(float(jax.device_get(m["loss"])))
      if not np.isfinite(losses[-1]):
        raise FloatingPointError(f"non-finite fine-tune loss at step {len(losses)} ({name})")
      bar.update(1)
      bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
  out = {"params": _to_numpy(state["params"]), "losses": losses, "transfer_report": rep,
         "seconds": time.time() - t0, "init": init, "transfer": transfer, "steps": steps}
  _save(path, out)
  return out


# =============================================================================================================
# Stage (c): rollouts.


@dataclasses.dataclass(frozen=True, eq=False)
class GuidanceDenoiser:
  """Causal action guidance with the scale read from ``params[2]`` (a traced scalar): one compilation serves
  every scale. Rows ``[:B]`` conditional, ``[B:]`` the newest frame's action dropped (rollout.branch_inputs)."""
  fn: Callable
  rescale: float

  def init_state(self, params, inputs):
    del params, inputs
    return ()

  def __call__(self, params, state, inputs):
    both = rl.branch_inputs(inputs)
    out = self.fn(params, both.latents, both.t, both.cond, both.actions, both.action_mask)
    cond, uncond = guidance_lib.split_branches(out)
    valid = jnp.arange(inputs.latents.shape[1]) <= inputs.new_index
    return rl.combine_guidance(cond, uncond, params[2], self.rescale, valid), state


class WorldModelRunner:
  """A trained world model ready to sample: encode/decode, AR rollout (traced guidance scale), NAR sampling."""

  def __init__(self, cfg, params: dict, *, window: int | None = None, ddim_steps: int | None = None):
    from vid2world_jax import train, world_model
    d = cfg.demo
    self.cfg = cfg
    self.mcfg = train.model_config(cfg)
    seed = int(cfg.seed)
    wm, fs = world_model.build(self.mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
    g, pst, rest = nnx.split(wm, nnx.Param, ...)
    nnx.replace_by_pure_dict(pst, params)
    wm = nnx.merge(g, pst, rest)
    self.graphdef, self.state = nnx.split(wm)
    self.fgraph, self.fstate = nnx.split(fs)
    base = rl.world_model_rollout_model(self.mcfg, self.graphdef, self.fgraph)
    self.base = base
    self.model = rl.RolloutModel(denoiser=GuidanceDenoiser(base.denoiser.fn, float(d.guidance_rescale)),
                                 cond_fn=base.cond_fn, schedule=base.schedule)
    hn = d.history_noise
    self.scfg = rl.SamplerConfig(
        ddim_steps=int(d.ddim_steps if ddim_steps is None else ddim_steps), eta=float(d.eta),
        guidance_scale=None, guidance_rescale=float(d.guidance_rescale),
        history_noise=hn if isinstance(hn, str) else int(hn),
        window=int(window or self.mcfg.unet.temporal_length), final_alpha_one=bool(d.final_alpha_one))
    fg, fst = self.fgraph, self.fstate
    self.encode_raw = lambda x: nnx.merge(fg, fst).encode(x, jax.random.key(0))  # [-1, 1] frames -> latents
    self.decode_raw = lambda z: nnx.merge(fg, fst).decode(z)                      # latents -> [-1, 1] frames
    self._encode = jax.jit(self.encode_raw)
    self._decode = jax.jit(self.decode_raw)
    self._nar = None

  def encode(self, frames_pm1: np.ndarray) -> jax.Array:
    return self._encode(jnp.asarray(frames_pm1, jnp.float32))

  def decode01(self, latents) -> np.ndarray:
    return np.clip((np.asarray(self._decode(latents)) + 1.0) / 2.0, 0.0, 1.0)

  def rollout(self, context_latents, actions, scale: float, seed: int, horizon: int) -> jax.Array:
    """AR rollout ``[B, k + horizon, h, w, c]`` from context latents and raw actions ``[B, >= k+horizon-1, A]``."""
    keys = rl.rollout_keys(int(seed), context_latents.shape[0])
    params = (self.state, self.fstate, jnp.float32(scale))
    return rl.rollout(self.model, self.scfg, params, context_latents, jnp.asarray(actions, jnp.float32), keys,
                      horizon=horizon)

  def nar_sample(self, context_latent, actions, scale: float, seed: int, frames: int) -> jax.Array:
    """Non-autoregressive sampling (the paper's Vid2World-NAR): frames 1..T-1 denoised JOINTLY with one shared
    timestep; frame 0 is the given context at the fixed history level t_small (noise drawn once), actions of
    the generated frames dropped in the guidance's unconditional pass. Returns ``[B, T, h, w, c]``."""
    if self._nar is None:
      self._nar = jax.jit(self._nar_impl, static_argnums=(4,))
    return self._nar(jnp.asarray(context_latent), jnp.asarray(actions, jnp.float32), jnp.float32(scale),
                     jax.random.key(int(seed)), int(frames))

  def _nar_impl(self, ctx, actions, scale, key, t_frames):
    from vid2world_jax.diffusion import actions as actions_lib
    from vid2world_jax.diffusion import ddim
    sch = self.base.schedule
    taus, prevs, t_small = rl.timestep_plan(self.scfg, sch.num_timesteps)
    b = ctx.shape[0]
    params = (self.state, self.fstate)
    cond = self.base.cond_fn(params, ctx)
    k0, k1, k2 = jax.random.split(key, 3)
    hist = rl.noise_history(sch, ctx, t_small, jax.random.normal(k0, ctx.shape))
    x = jax.random.normal(k1, (b, t_frames - 1) + ctx.shape[1:])
    acts = actions_lib.align_actions(actions[:, :t_frames])
    ones = jnp.ones((b, t_frames), jnp.float32)
    unc = ones.at[:, 1:].set(0.0)
    cond2 = guidance_lib.stack_branches(cond, cond)
    acts2 = guidance_lib.stack_branches(acts, acts)
    mask2 = guidance_lib.stack_branches(ones, unc)
    noises = jax.random.normal(k2, (len(taus),) + x.shape)

    def step(x, xs):
      tau, tp, z = xs
      lat = jnp.concatenate([hist[:, None], x], axis=1)
      t = jnp.concatenate([jnp.full((b, 1), t_small, jnp.int32), jnp.full((b, t_frames - 1), tau, jnp.int32)], 1)
      out = self.base.denoiser.fn(params, guidance_lib.stack_branches(lat, lat), guidance_lib.stack_branches(t, t),
                                  cond2, acts2, mask2)
      c, u = guidance_lib.split_branches(out)
      pred = rl.combine_guidance(c, u, scale, float(self.cfg.demo.guidance_rescale))[:, 1:]
      x, _ = ddim.ddim_step(sch, x, pred, jnp.full((b,), tau, jnp.int32), jnp.full((b,), tp, jnp.int32),
                            self.scfg.eta, z if self.scfg.eta != 0.0 else None,
                            final_alpha_one=self.scfg.final_alpha_one)
      return x, None

    x, _ = jax.lax.scan(step, x, (jnp.asarray(taus), jnp.asarray(prevs), noises))
    return jnp.concatenate([ctx[:, None], x], axis=1)


def load_eval_clips(cfg) -> dict:
  """Held-out clips: ``{"frames" [N, T, H, W, 3] in [-1, 1], "actions" [N, T, A], "names" [N]}``."""
  from vid2world_jax import data
  clips = data.make_eval_clips(cfg.data, int(cfg.demo.eval_clips), split="test")
  frames, actions, names = [], [], []
  for k in range(len(clips)):
    c = clips[k]
    if c is None:
      continue
    frames.append(c["frames"])
    actions.append(c["actions"])
    names.append(f"{clips.specs[k].name}_t{int(c['start'])}")
  return {"frames": np.stack(frames).astype(np.float32), "actions": np.stack(actions).astype(np.float32),
          "names": names}


frame_metrics = wmm.frame_metrics      # kept as names of this module for the ablation driver and tests
per_horizon = wmm.per_horizon
paired_difference = wmm.paired_difference


def per_clip_psnr(m: dict) -> list:
  """``[N]`` PSNR per clip, averaged over horizons 1..T-1 (for paired comparisons across clips)."""
  return wmm.per_clip(m["psnr"])


def sample_videos(runner: WorldModelRunner, clips: dict, scale: float, *, seed: int, shuffle_actions: bool = False,
                  mode: str = "ar", progress: bool = False, desc: str = "") -> np.ndarray:
  """Rollouts of all eval clips from their first frame: ``[N, T, H, W, 3]`` in [0, 1]."""
  d = runner.cfg.demo
  frames, actions = clips["frames"], clips["actions"]
  if shuffle_actions:  # the actions of another clip (a derangement: roll by one)
    actions = np.roll(actions, 1, axis=0)
  n, t = frames.shape[:2]
  bsz = int(d.eval_batch)
  outs = []
  with _tqdm(n, desc, progress) as bar:
    for s in range(0, n, bsz):
      fb, ab = frames[s:s + bsz], actions[s:s + bsz]
      m = fb.shape[0]
      if m < bsz:  # pad to the fixed batch (one compilation)
        fb = np.concatenate([fb, np.repeat(fb[-1:], bsz - m, 0)])
        ab = np.concatenate([ab, np.repeat(ab[-1:], bsz - m, 0)])
      z = runner.encode(fb)
      if mode == "ar":
        lat = runner.rollout(z[:, :1], ab, scale, seed + s, horizon=t - 1)
      elif mode == "nar":
        lat = runner.nar_sample(z[:, 0], ab, scale, seed + s, t)
      else:
        raise ValueError(f"mode must be 'ar' or 'nar', got {mode!r}")
      outs.append(runner.decode01(lat)[:m])
      bar.update(m)
  return np.concatenate(outs)


def evaluate(cfg, params: dict, *, clips: dict | None = None, sweep: bool = True, shuffled: bool = True,
             nar: bool = False, progress: bool | None = None, tag: str = "") -> dict:
  """Stage (c) on the held-out clips. Returns metrics (per horizon) and the arrays for the report."""
  d = cfg.demo
  progress = bool(d.progress) if progress is None else progress
  clips = load_eval_clips(cfg) if clips is None else clips
  runner = WorldModelRunner(cfg, params)
  gt01 = (clips["frames"] + 1.0) / 2.0
  from vid2world_jax.demo import baselines
  base01 = baselines.copy_last_frame(gt01, 1)
  out = {"names": clips["names"], "gt": gt01, "copy_last": base01}
  scale = float(d.guidance_scale)
  pred = sample_videos(runner, clips, scale, seed=int(d.seed), progress=progress,
                       desc=f"(c) rollouts{tag} s={scale:g}")
  out["pred"] = pred
  fm = frame_metrics(pred, gt01)
  ph = {"world_model": per_horizon(fm), "copy_last_frame": per_horizon(frame_metrics(base01, gt01))}
  out["per_clip_psnr"] = {"world_model": per_clip_psnr(fm)}
  if shuffled:
    sh = sample_videos(runner, clips, scale, seed=int(d.seed), shuffle_actions=True, progress=progress,
                       desc=f"(c) shuffled actions{tag}")
    fs = frame_metrics(sh, gt01)
    ph["shuffled_actions"] = per_horizon(fs)
    out["per_clip_psnr"]["shuffled_actions"] = per_clip_psnr(fs)
    out["delta_psnr"] = wmm.delta_psnr(fm["psnr"], fs["psnr"])
    det = position_detector(cfg)
    if det is not None:
      from vid2world_jax.demo import breakout_eval  # pylint: disable=import-outside-toplevel
      pos_gt = breakout_eval.paddle_positions(det, gt01)
      out["paddle_error"] = {"true": wmm.position_error(breakout_eval.paddle_positions(det, pred), pos_gt),
                             "shuffled": wmm.position_error(breakout_eval.paddle_positions(det, sh), pos_gt)}
      out["shuffled"] = sh
  if nar:
    nv = sample_videos(runner, clips, scale, seed=int(d.seed), mode="nar", progress=progress,
                       desc=f"(c) non-AR sampling{tag}")
    ph["non_autoregressive"] = per_horizon(frame_metrics(nv, gt01))
  out["per_horizon"] = ph
  out["horizons"] = list(range(1, gt01.shape[1]))
  if sweep:
    rows = []
    for s in d.guidance_sweep:
      s = float(s)
      if s == scale:
        m, dp = ph["world_model"], out.get("delta_psnr")
      else:
        fv = frame_metrics(sample_videos(runner, clips, s, seed=int(d.seed), progress=progress,
                                         desc=f"(c) guidance s={s:g}"), gt01)
        m, dp = per_horizon(fv), None
        if shuffled:  # Delta-t-PSNR at this scale (point 5: does guidance change action following?)
          fsh = frame_metrics(sample_videos(runner, clips, s, seed=int(d.seed), shuffle_actions=True,
                                            progress=progress, desc=f"(c) guidance s={s:g}, shuffled"), gt01)
          dp = wmm.delta_psnr(fv["psnr"], fsh["psnr"])
      rows.append({"scale": s, "label": f"{s:g}" + (" (no guidance)" if s == 1.0 else ""),
                   **{k: float(np.mean(m[k])) for k in ("psnr", "ssim", "mse")},
                   "delta_psnr": None if dp is None else dp["mean"],
                   "delta_psnr_se": None if dp is None else dp["se"]})
    out["guidance_sweep"] = rows
  return out


def position_detector(cfg):
  """The controlled object's detector for the embedded simulator (fit on its real recorded frames), or None."""
  if cfg.data.source != "embedded" or cfg.data.get("embedded", {}).get("env", "breakout") != "breakout":
    return None
  from vid2world_jax.data import breakout  # pylint: disable=import-outside-toplevel
  from vid2world_jax.data import pipeline as data_pipeline  # pylint: disable=import-outside-toplevel
  return breakout.fit_detector(cfg.data.path or data_pipeline.embedded_path(cfg.data))


def long_horizon(cfg, params: dict, progress: bool | None = None) -> dict | None:
  """Rollouts to ``demo.long_horizon`` x the training window with a sliding window, on held-out episodes long
  enough for it: PSNR/SSIM vs horizon beside copy-last-frame, and the frames' statistics vs the ground truth's."""
  d = cfg.demo
  factor = int(d.long_horizon)
  if factor <= 0:
    return None
  progress = bool(d.progress) if progress is None else progress
  window = int(train_model_config(cfg).unet.temporal_length)
  lcfg = ml_collections.ConfigDict(cfg.to_dict())
  lcfg.data.clip_length = factor * window + 1
  lcfg.data.on_bad_data = "skip"   # only episodes long enough for the long clip
  lcfg.demo.eval_clips = int(d.long_horizon_clips)
  try:
    clips = load_eval_clips(lcfg)
  except Exception as e:  # noqa: BLE001 - no episode long enough
    _log(f"long-horizon evaluation skipped: {type(e).__name__}: {e}")
    return None
  runner = WorldModelRunner(cfg, params, window=window)
  gt01 = (clips["frames"] + 1.0) / 2.0
  from vid2world_jax.demo import baselines  # pylint: disable=import-outside-toplevel
  pred = sample_videos(runner, clips, float(d.guidance_scale), seed=int(d.seed) + 7, progress=progress,
                       desc=f"(c) long horizon ({gt01.shape[1] - 1} frames)")
  ph = {"world_model": per_horizon(frame_metrics(pred, gt01)),
        "copy_last_frame": per_horizon(frame_metrics(baselines.copy_last_frame(gt01, 1), gt01))}
  return {"per_horizon": ph, "horizons": list(range(1, gt01.shape[1])), "frames": int(gt01.shape[1] - 1),
          "clips": int(gt01.shape[0]), "window": window, "frame_statistics": wmm.frame_statistics(pred, gt01),
          "names": clips["names"], "gt": gt01, "pred": pred}


def train_model_config(cfg):
  from vid2world_jax import train  # pylint: disable=import-outside-toplevel
  return train.model_config(cfg)


def nar_metrics(cfg, params: dict, clips: dict, progress: bool | None = None) -> dict:
  """Non-autoregressive sampling (ablation iv) at the main guidance scale, with true and shuffled actions:
  ``{"per_horizon": {...}, "delta_psnr": {...}}``."""
  d = cfg.demo
  progress = bool(d.progress) if progress is None else progress
  runner = WorldModelRunner(cfg, params)
  gt01 = (clips["frames"] + 1.0) / 2.0
  fm = {}
  for shuffle in (False, True):
    v = sample_videos(runner, clips, float(d.guidance_scale), seed=int(d.seed), mode="nar", progress=progress,
                      shuffle_actions=shuffle, desc="(c) non-AR sampling" + (", shuffled" if shuffle else ""))
    fm[shuffle] = frame_metrics(v, gt01)
  return {"per_horizon": per_horizon(fm[False]), "delta_psnr": wmm.delta_psnr(fm[False]["psnr"], fm[True]["psnr"])}


# =============================================================================================================
# Policy evaluation (paper §5.1 analogue): closed loop on Breakout (breakout_eval), open-loop replay on Meta-World
# (metaworld_eval).


def policy_evaluation(cfg, params: dict, workdir: str) -> dict:
  """Real vs world-model policy ranking for the embedded simulator; cached in ``<workdir>/eval``."""
  path = os.path.join(workdir, "eval", "policy_eval.pkl")
  if os.path.exists(path):
    return _load(path)
  pe = cfg.demo.policy_eval
  if cfg.data.get("embedded", {}).get("env", "breakout") == "metaworld":
    from vid2world_jax.demo import metaworld_eval  # pylint: disable=import-outside-toplevel
    out = metaworld_eval.policy_evaluation(cfg, WorldModelRunner(cfg, params, ddim_steps=int(pe.ddim_steps)))
  else:
    from vid2world_jax import envs  # pylint: disable=import-outside-toplevel
    from vid2world_jax.demo import breakout_eval  # pylint: disable=import-outside-toplevel
    runner = WorldModelRunner(cfg, params, ddim_steps=int(pe.ddim_steps))
    n = len(pe.policies) * int(pe.episodes)
    venv = envs.WorldModelVectorEnv(runner.model, (runner.state, runner.fstate, jnp.float32(cfg.demo.guidance_scale)),
                                    runner.scfg, num_envs=n, encode_fn=runner.encode_raw,
                                    decode_fn=runner.decode_raw, frame_shape=tuple(cfg.data.resolution) + (3,),
                                    action_dim=int(cfg.data.action_dim))
    t0 = time.time()
    out = breakout_eval.policy_evaluation(venv, pe.policies, int(pe.episodes), int(pe.first_seed), int(pe.horizon),
                                          position_detector(cfg), seed=int(cfg.demo.seed) + 99)
    _log(f"policy evaluation: {n} closed-loop episodes of {int(pe.horizon)} frames in {time.time() - t0:.0f} s")
  _save(path, out)
  return out


# =============================================================================================================
# The whole run.


def _timed(timing: dict, cpu: dict, name: str, fn):
  t0, c0 = time.time(), time.process_time()
  out = fn()
  timing[name] = time.time() - t0
  cpu[name] = time.process_time() - c0
  return out


def _cached(path: str, fn):
  if os.path.exists(path):
    _log(f"cached {path}")
    return _load(path)
  out = fn()
  _save(path, out)
  return out


class QualityBarNotMet(SystemExit):
  """``demo.strict``: the run finished but points of the quality bar fell short (exit status 3)."""


def run(config, workdir: str) -> dict:
  """Stages (a)-(d); returns the metrics dict (also written to ``<workdir>/report/metrics.json``)."""
  from vid2world_jax.demo import quality_bar as qb
  from vid2world_jax.demo import report
  cfg = with_demo(config)
  check_demo_config(cfg)
  d = cfg.demo
  os.makedirs(workdir, exist_ok=True)
  t_all, c_all = time.time(), time.process_time()
  timing, cpu = {}, {}  # wall / process CPU seconds per stage (CPU: comparable on a shared, loaded machine)
  pre = _timed(timing, cpu, "pretrain", lambda: pretrain(cfg, workdir)) if d.init == "pretrained" else None
  ft = _timed(timing, cpu, "finetune", lambda: finetune(cfg, workdir, pretrained=pre))
  ev = _timed(timing, cpu, "evaluate", lambda: _cached(os.path.join(workdir, "eval", "rollouts.pkl"),
                                                        lambda: evaluate(cfg, ft["params"])))
  lh = _timed(timing, cpu, "long_horizon", lambda: _cached(os.path.join(workdir, "eval", "long_horizon.pkl"),
                                                           lambda: long_horizon(cfg, ft["params"])))
  ev["long_horizon"] = lh
  pe = None
  if d.policy_eval.enabled:
    pe = _timed(timing, cpu, "policy_eval", lambda: policy_evaluation(cfg, ft["params"], workdir))
  t0, c0 = time.time(), time.process_time()
  rdir = os.path.join(workdir, "report")
  bar = qb.quality_bar(ev, pe)
  metrics = {
      "setup": {"data": f"embedded {cfg.data.get('embedded', {}).get('env', 'breakout')} test split, "
                        f"{len(ev['names'])} clips of {cfg.data.clip_length} frames at {tuple(cfg.data.resolution)}",
                "pretrain_steps": int(d.pretrain_steps) if pre is not None else 0,
                "pretrain_source": pre.get("source", "run") if pre is not None else None,
                "finetune_steps": int(ft["steps"]), "init": ft["init"], "weight_transfer": ft["transfer"],
                "ddim_steps": int(d.ddim_steps), "eta": float(d.eta), "guidance_scale": float(d.guidance_scale),
                "guidance_rescale": float(d.guidance_rescale), "history_noise": d.history_noise,
                "devices": [str(x) for x in jax.devices()][:2],
                "final_pretrain_loss": float(np.mean(pre["losses"][-20:])) if pre and pre["losses"] else None,
                "final_finetune_loss": float(np.mean(ft["losses"][-20:])) if ft["losses"] else None},
      "horizons": ev["horizons"], "per_horizon": ev["per_horizon"], "guidance_sweep": ev.get("guidance_sweep"),
      "delta_psnr": ev.get("delta_psnr"), "paddle_error": ev.get("paddle_error"),
      "long_horizon": None if lh is None else {k: v for k, v in lh.items() if k not in ("gt", "pred", "names")},
      "quality_bar": bar,
      "unavailable": {"LPIPS / FID / FVD": "need user-supplied network weight files (vid2world_jax.metrics.weights); "
                                           "the demo reports PSNR, SSIM and MSE"},
  }
  if pe is not None:
    metrics["policy_eval"] = {k: v for k, v in pe.items() if not k.startswith("_")}
  os.makedirs(os.path.join(rdir, "plots"), exist_ok=True)
  scale = int(d.video_scale)
  vdir = os.path.join(rdir, "videos")
  report.write_videos(vdir, ev["gt"], ev["pred"], ev["names"], baseline=ev["copy_last"],
                      max_videos=int(d.num_videos), scale=scale,
                      extra=None if "shuffled" not in ev else ev["shuffled"])
  if lh is not None:
    report.write_videos(os.path.join(vdir, "long_horizon"), lh["gt"], lh["pred"], lh["names"],
                        max_videos=min(4, int(d.num_videos)), scale=scale)
  if pe is not None and "_videos" in pe:
    real, imagined = pe["_videos"]
    names = [f"{p}_seed{s}" for p, s in zip(pe["per_episode"]["policy"], pe["per_episode"]["seed"])]
    keep = [i for i in range(len(names)) if i % int(d.policy_eval.episodes) == 0]  # one episode per policy
    report.write_videos(os.path.join(vdir, "policy_eval"), real[keep], imagined[keep], [names[i] for i in keep],
                        max_videos=len(keep), scale=scale)
  elif pe is not None and "_last_frames" in pe:
    report.write_gif(os.path.join(vdir, "policy_eval_last_frames_real_vs_model.gif"),
                     report.side_by_side([pe["_last_frames"]], scale=2), fps=1.0)
  report.plot_horizon(os.path.join(rdir, "plots", "error_vs_horizon.png"), metrics)
  if lh is not None:
    report.plot_horizon(os.path.join(rdir, "plots", "long_horizon.png"),
                        {"horizons": lh["horizons"], "per_horizon": lh["per_horizon"]},
                        title=f"long horizon: {lh['frames']} frames, sliding window {lh['window']}")
  if ev.get("guidance_sweep"):
    report.plot_guidance(os.path.join(rdir, "plots", "metric_vs_guidance.png"), ev["guidance_sweep"])
  timing["report"] = time.time() - t0
  cpu["report"] = time.process_time() - c0
  timing["total"] = time.time() - t_all
  cpu["total"] = time.process_time() - c_all
  metrics["timing"] = timing
  metrics["cpu_seconds"] = cpu
  # Training stages loaded from the workdir cache keep the wall time of the invocation that computed them.
  metrics["computed_seconds"] = {"pretrain": pre["seconds"] if pre is not None else 0.0, "finetune": ft["seconds"]}
  report.write_metrics(rdir, metrics)
  print(report.summary_text(metrics, rdir), flush=True)
  short = qb.shortfalls(bar)
  if d.strict and short:
    print("demo.strict: the quality bar was not met:\n" + "\n".join(f"  - {x}" for x in short), flush=True)
    raise QualityBarNotMet(3)
  return metrics
