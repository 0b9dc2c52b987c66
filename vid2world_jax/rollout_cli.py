"""Command line rollout of a trained world model (run as ``python -m vid2world_jax.rollout``).

  python -m vid2world_jax.rollout --config=configs/test_tiny.py --checkpoint=/tmp/v2w_tiny \\
      --context=clip.mp4 --actions=actions.npy --guidance=2.5 --out=rollout.gif

* ``--config``: the training config file; ``--checkpoint``: the training workdir, its ``checkpoints/`` folder or
  one step folder (``checkpoints/<step>``); the latest step is used. Only the trained parameters are read.
* ``--context``: a video (.mp4/.gif/..., read by ``video_io.read_video``) or ``.npz`` (array ``frames``/``context``: uint8
  ``[k, H, W, 3]`` or ``[B, k, H, W, 3]``); the first ``--context_frames`` frames are used (default
  ``config.eval.context_frames``).
* ``--actions``: ``.npy`` ``[N, A]`` or ``[B, N, A]``; ``actions[f]`` is the action taken at frame f, so
  ``N = k + horizon - 1`` (``--horizon`` defaults to that).
* ``--out``: ``.mp4``/``.gif`` (decoded RGB; a batch is tiled side by side) or ``.npz`` (``frames`` uint8
  ``[B, k + horizon, H, W, 3]`` and ``latents``).
Sampler flags (``--guidance``, ``--guidance_rescale``, ``--ddim_steps``, ``--eta``, ``--window``,
``--history_noise``) default to the config's ``eval`` section / the paper's settings. ``--cached`` (default
``config.eval.cached_rollout``) selects the cached fast path (strictly causal UNet only; same frames).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

_DEFINED = False


def define_model_flags():
  """Flags shared by the rollout and policy-evaluation CLIs."""
  global _DEFINED
  if _DEFINED:
    return
  _DEFINED = True
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "training config file (configs/*.py)", lock_config=False)
  flags.DEFINE_string("checkpoint", None, "training workdir, its checkpoints/ folder, or a step folder")
  flags.DEFINE_float("guidance", None, "causal action guidance scale s (default config.eval.guidance_scale); "
                     "1 = conditional prediction only")
  flags.DEFINE_float("guidance_rescale", None, "CFG rescale phi (default config.eval.guidance_rescale)")
  flags.DEFINE_integer("ddim_steps", 50, "DDIM steps per generated frame")
  flags.DEFINE_float("eta", 1.0, "DDIM eta (1 = stochastic, as the released evaluation)")
  flags.DEFINE_integer("window", 0, "temporal window in frames (0 = the UNet's temporal_length)")
  flags.DEFINE_bool("final_alpha_one", False, "last DDIM step to alpha-bar 1 (returns x0_hat; no residual noise) "
                    "instead of DynamiCrafter's alpha-bar[0]")
  flags.DEFINE_string("history_noise", "second_last", "noise level of history frames: 'second_last' or an int")
  flags.DEFINE_integer("seed", 0, "rollout seed (one key per rollout is split from it)")
  flags.DEFINE_bool("allow_noncausal", False, "run even if the UNet config is not strictly causal")
  flags.DEFINE_bool("cached", None, "cached fast path of the rollout (strictly causal UNet only; same frames): "
                    "each DDIM step runs the UNet on the new frame only (default config.eval.cached_rollout)")
  flags.mark_flags_as_required(["config", "checkpoint"])


def find_checkpoint(path: str) -> str:
  """The ``state`` folder of the latest step under ``path`` (workdir, checkpoints/ or a step folder)."""
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  root = os.path.join(path, "checkpoints") if os.path.isdir(os.path.join(path, "checkpoints")) else path
  steps = sorted((int(d) for d in os.listdir(root) if d.isdigit() and os.path.isdir(os.path.join(root, d, "state"))))
  if not steps:
    raise FileNotFoundError(f"no checkpoint (<step>/state) found under {root}")
  return os.path.join(root, str(steps[-1]), "state")


def load_world_model(cfg, checkpoint: str):
  """``(WorldModel, FrozenStage)`` built from ``cfg.model`` with the trained parameters of ``checkpoint``."""
  import jax
  import orbax.checkpoint as ocp
  from flax import nnx
  import ml_collections
  from vid2world_jax import world_model
  state_dir = find_checkpoint(checkpoint)
  # as train.model_config (not imported: train.py defines absl flags at import time)
  mcfg = ml_collections.ConfigDict(cfg.model.to_dict())
  mcfg.unet.dtype = cfg.precision
  mcfg.unet.remat = bool(cfg.remat)
  wm, frozen = world_model.build(mcfg, rngs=nnx.Rngs(params=0, dropout=1))
  restored = ocp.StandardCheckpointer().restore(state_dir)
  if "params" not in restored:
    raise ValueError(f"{state_dir} holds no 'params' (keys: {sorted(restored)})")
  params = nnx.state(wm, nnx.Param)
  want = nnx.to_pure_dict(params)
  got = _match_structure(want, restored["params"], state_dir)
  nnx.replace_by_pure_dict(params, got)
  nnx.update(wm, params)
  if mcfg.first_stage == "vae" or mcfg.context == "resampler":
    if not cfg.get("init_from"):
      raise ValueError("the VAE / CLIP weights are not in training checkpoints: set config.init_from")
    from vid2world_jax import init_from  # frozen encoders come from the converted checkpoint
    _, fstate = nnx.split(frozen)
    _, fstate = init_from.load(cfg, mcfg, None, fstate, None, None)
    nnx.update(frozen, fstate)
  return mcfg, wm, frozen


def _match_structure(want, got, where, path=""):
  """``got`` (orbax turns integer dict keys into strings) re-keyed like ``want``; clear error on a mismatch."""
  if isinstance(want, dict):
    if not isinstance(got, dict):
      raise ValueError(f"checkpoint {where}: {path or '/'} is not a dict")
    out = {}
    for k, v in want.items():
      key = k if k in got else str(k)
      if key not in got:
        raise ValueError(f"checkpoint {where} lacks parameter {path}/{k} (wrong --config for this checkpoint?)")
      out[k] = _match_structure(v, got[key], where, f"{path}/{k}")
    extra = set(map(str, got)) - set(map(str, want))
    if extra:
      raise ValueError(f"checkpoint {where} has parameters the config's model lacks: {path}/{sorted(extra)[:5]}")
    return out
  arr = np.asarray(got)
  if arr.shape != np.shape(want):
    raise ValueError(f"checkpoint {where}: {path} has shape {arr.shape}, the config's model {np.shape(want)}")
  return arr


def sampler_from_flags(cfg):
  from vid2world_jax import rollout as rl
  f = flags.FLAGS
  scale = cfg.eval.guidance_scale if f.guidance is None else f.guidance
  rescale = cfg.eval.guidance_rescale if f.guidance_rescale is None else f.guidance_rescale
  hn = f.history_noise if f.history_noise == "second_last" else int(f.history_noise)
  window = f.window or int(cfg.model.unet.temporal_length)
  return rl.SamplerConfig(ddim_steps=f.ddim_steps, eta=f.eta, guidance_scale=float(scale),
                          guidance_rescale=float(rescale), history_noise=hn, window=window,
                          final_alpha_one=bool(f.final_alpha_one))


def load_world_model_from_flags():
  """``(config with model = the built model config, WorldModel, FrozenStage, SamplerConfig)``."""
  f = flags.FLAGS
  cfg = f.config
  mcfg, wm, frozen = load_world_model(cfg, f.checkpoint)
  cfg.model = mcfg
  return cfg, wm, frozen, sampler_from_flags(cfg)


def read_context(path: str) -> np.ndarray:
  """uint8 ``[B, k, H, W, 3]`` from a video or an .npz."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"context not found: {path}")
  if path.endswith(".npz"):
    with np.load(path) as z:
      key = next((k for k in ("frames", "context") if k in z.files), None)
      if key is None:
        raise ValueError(f"{path}: expected an array named 'frames' or 'context', found {z.files}")
      x = z[key]
  else:
    from vid2world_jax import video_io
    x = video_io.read_video(path)
  if x.ndim == 4:
    x = x[None]
  if x.ndim != 5 or x.shape[-1] != 3:
    raise ValueError(f"{path}: context must be [k, H, W, 3] or [B, k, H, W, 3] RGB, got shape {x.shape}")
  if x.dtype != np.uint8:
    if np.issubdtype(x.dtype, np.floating) and x.min() >= -1.0 and x.max() <= 1.0:
      x = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)   # [-1, 1] floats
    else:
      raise ValueError(f"{path}: context frames must be uint8 or floats in [-1, 1], got {x.dtype}")
  return x


def write_output(path: str, frames: np.ndarray, latents: np.ndarray, fps: int = 3):
  if path.endswith(".npz"):
    np.savez_compressed(path, frames=frames, latents=latents)
    return
  from vid2world_jax import video_io
  if not path.endswith((".mp4", ".gif")):
    raise ValueError(f"--out must end with .mp4, .gif or .npz, got {path!r}")
  video_io.write_video(path, np.concatenate(list(frames), axis=2), fps=fps)  # [T, H, B*W, 3]: batch side by side


def main(argv):
  del argv
  import jax
  from tqdm import tqdm
  from vid2world_jax import rollout as rl
  f = flags.FLAGS
  if not f.out.endswith((".mp4", ".gif", ".npz")):
    raise SystemExit(f"--out must end with .mp4, .gif or .npz, got {f.out!r}")
  ctx = read_context(f.context)
  k = f.context_frames or int(f.config.eval.context_frames)
  if ctx.shape[1] < k:
    raise SystemExit(f"too few context frames: {f.context} has {ctx.shape[1]}, need {k} (--context_frames)")
  ctx = ctx[:, :k]
  if not os.path.exists(f.actions):
    raise SystemExit(f"actions not found: {f.actions}")
  acts = np.load(f.actions).astype(np.float32)
  if acts.ndim == 2:
    acts = acts[None]
  if acts.ndim != 3:
    raise SystemExit(f"--actions must be [N, A] or [B, N, A], got shape {acts.shape}")
  try:
    cfg, wm, frozen, sampler = load_world_model_from_flags()
  except FileNotFoundError as e:
    raise SystemExit(str(e)) from None
  a_dim = int(cfg.model.unet.action_dim)
  if acts.shape[2] != a_dim:
    raise SystemExit(f"action dimension mismatch: {f.actions} has {acts.shape[2]}-dim actions, the model "
                     f"expects {a_dim}")
  if ctx.shape[0] != acts.shape[0]:
    if ctx.shape[0] == 1:
      ctx = np.repeat(ctx, acts.shape[0], axis=0)
    elif acts.shape[0] == 1:
      acts = np.repeat(acts, ctx.shape[0], axis=0)
    else:
      raise SystemExit(f"batch mismatch: {ctx.shape[0]} contexts vs {acts.shape[0]} action sequences")
  horizon = f.horizon or acts.shape[1] - k + 1
  if horizon < 1 or acts.shape[1] < k + horizon - 1:
    raise SystemExit(f"{k} context frames + horizon {horizon} need {k + horizon - 1} actions, "
                     f"{f.actions} has {acts.shape[1]}")
  bar = tqdm(total=horizon, desc="frames", unit="frame", disable=not f.progress)

  def progress(frame):
    bar.n = int(frame) - k
    bar.refresh()

  cached = bool(cfg.eval.get("cached_rollout", False)) if f.cached is None else f.cached
  try:
    out, frames = rl.rollout_world_model(cfg.model, wm, frozen, sampler, ctx, acts, seed=f.seed, horizon=horizon,
                                         allow_noncausal=f.allow_noncausal, cached=cached, progress=progress)
  except ValueError as e:
    if not cached or "cached rollout" not in str(e):
      raise
    raise SystemExit(str(e)) from None
  out = jax.block_until_ready(out)
  bar.close()
  write_output(f.out, frames, np.asarray(out))
  print(f"wrote {f.out}: {frames.shape[0]} rollout(s) of {frames.shape[1]} frames "
        f"({k} context + {horizon} generated), guidance {sampler.guidance_scale}", file=sys.stderr)


def define_rollout_flags():
  define_model_flags()
  flags.DEFINE_string("context", None, "context video (.mp4/.gif/...) or .npz with 'frames' uint8 [k,H,W,3]")
  flags.DEFINE_string("actions", None, ".npy actions [N, A] or [B, N, A] (actions[f] taken at frame f)")
  flags.DEFINE_string("out", None, "output .mp4 / .gif / .npz")
  flags.DEFINE_integer("context_frames", 0, "context frames k (0 = config.eval.context_frames)")
  flags.DEFINE_integer("horizon", 0, "frames to generate (0 = N - k + 1)")
  flags.DEFINE_bool("progress", True, "show a progress bar")
  flags.mark_flags_as_required(["context", "actions", "out"])


def run():
  from absl import app
  define_rollout_flags()
  app.run(main)


if __name__ == "__main__":
  run()
