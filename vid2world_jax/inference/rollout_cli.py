"""Command line rollout of a trained world model (run as ``python -m vid2world_jax.rollout``).

  python -m vid2world_jax.rollout --config=configs/test_tiny.py --checkpoint=/tmp/v2w_tiny \\
      --context=clip.mp4 --actions=actions.npy --guidance=2.5 --out=rollout.gif

* ``--checkpoint``: the training workdir, its ``checkpoints/`` folder, one step folder (``checkpoints/<step>``) or
  the default job's workdir (``runs/demo``); the latest step is used. Only the trained parameters are read (the EMA
  when present, ``--noema`` for the raw ones; ``--dtype=bfloat16`` casts them). ``--config``: the training config
  file (default: the config saved with the checkpoint). The rollout runs through ``inference.InferenceSession``.
* ``--context``: a video (.mp4/.gif/..., read by ``video_io.read_video``) or ``.npz`` (array ``frames``/``context``: uint8
  ``[k, H, W, 3]`` or ``[B, k, H, W, 3]``); the first ``--context_frames`` frames are used (default
  ``config.eval.context_frames``).
* ``--actions``: ``.npy`` ``[N, A]`` or ``[B, N, A]``; ``actions[f]`` is the action taken at frame f, so
  ``N = k + horizon - 1`` (``--horizon`` defaults to that).
* ``--out``: ``.mp4``/``.gif`` (decoded RGB; a batch is tiled side by side) or ``.npz`` (``frames`` uint8
  ``[B, k + horizon, H, W, 3]`` and ``latents``).
Sampler flags (``--guidance``, ``--guidance_rescale``, ``--ddim_steps``, ``--eta``, ``--window``,
``--history_noise``) override the run's ``config.sampler`` block (``inference.sampler_config``; a checkpoint saved
before that block existed: the block's defaults, 50 DDIM steps and guidance 2.5). The cached fast path
(same frames) runs by default for a strictly causal UNet (``config.eval.cached_rollout`` "auto"); ``--nocached``
turns it off, ``--cached`` insists on it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import flags

from vid2world_jax import pixels, user_input
from vid2world_jax.inference.flags import LOAD_ERRORS, define_model_flags, load_session_from_flags
from vid2world_jax.user_input import UserInputError


def read_context(path: str) -> np.ndarray:
  """uint8 ``[B, k, H, W, 3]`` from a video or an .npz; a bad file raises ``UserInputError`` naming it."""
  if path.endswith(".npz"):
    _, x = user_input.load_npz(path, ("frames", "context"), "context")
  else:
    from vid2world_jax import video_io
    if not os.path.exists(path):
      raise FileNotFoundError(f"context not found: {path!r}")
    x = video_io.read_video(path)
  if x.ndim == 4:
    x = x[None]
  if x.ndim != 5 or x.shape[-1] != 3 or 0 in x.shape:
    raise UserInputError(f"context {path}: must be non-empty [k, H, W, 3] or [B, k, H, W, 3] RGB frames, got "
                         f"shape {x.shape}")
  if x.dtype != np.uint8:
    if np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and x.min() >= -1.0 and x.max() <= 1.0:
      x = pixels.to_uint8(x)   # [-1, 1] floats
    else:
      raise UserInputError(f"context {path}: frames must be uint8 or finite floats in [-1, 1], got {x.dtype}")
  return x


def read_actions(path: str) -> np.ndarray:
  """float32 ``[B, N, A]`` from an ``.npy`` ``[N, A]`` or ``[B, N, A]`` of finite numbers."""
  acts = user_input.load_npy(path, "actions")
  if acts.ndim == 2:
    acts = acts[None]
  if acts.ndim != 3 or 0 in acts.shape:
    raise UserInputError(f"actions {path}: must be non-empty [N, A] or [B, N, A], got shape {acts.shape}")
  return user_input.require_finite(acts, path, "actions", np.float32)


def write_output(path: str, frames: np.ndarray, latents: np.ndarray, fps: int = 3):
  """The rollout to ``path`` (.npz / .mp4 / .gif), written under a temporary name and renamed when complete."""
  if not path.endswith((".mp4", ".gif", ".npz")):
    raise UserInputError(f"--out must end with .mp4, .gif or .npz, got {path!r}")
  with user_input.atomic_output(path) as tmp:
    if path.endswith(".npz"):
      np.savez_compressed(tmp, frames=frames, latents=latents)
    else:
      from vid2world_jax import video_io
      video_io.write_video(tmp, np.concatenate(list(frames), axis=2), fps=fps)  # [T, H, B*W, 3]: side by side


@user_input.cli_main
def main(argv):
  del argv
  from tqdm import tqdm
  f = flags.FLAGS
  if not f.out.endswith((".mp4", ".gif", ".npz")):
    raise SystemExit(f"error: --out must end with .mp4, .gif or .npz, got {f.out!r}")
  ctx = read_context(f.context)
  acts = read_actions(f.actions)
  try:
    sess, scale = load_session_from_flags()
  except LOAD_ERRORS as e:
    raise SystemExit(f"error: {user_input.one_line(e)}") from None
  k = f.context_frames or sess.context_frames
  if k < 1:
    raise SystemExit(f"error: --context_frames must be >= 1, got {k}")
  if ctx.shape[1] < k:
    raise SystemExit(f"error: too few context frames: {f.context} has {ctx.shape[1]}, need {k} (--context_frames)")
  ctx = ctx[:, :k]
  if acts.shape[2] != sess.action_dim:
    raise SystemExit(f"error: action dimension mismatch: {f.actions} has {acts.shape[2]}-dim actions, the model "
                     f"expects {sess.action_dim}")
  if ctx.shape[0] != acts.shape[0]:
    if ctx.shape[0] == 1:
      ctx = np.repeat(ctx, acts.shape[0], axis=0)
    elif acts.shape[0] == 1:
      acts = np.repeat(acts, ctx.shape[0], axis=0)
    else:
      raise SystemExit(f"error: batch mismatch: {ctx.shape[0]} contexts vs {acts.shape[0]} action sequences")
  horizon = f.horizon or acts.shape[1] - k + 1
  if horizon < 1 or acts.shape[1] < k + horizon - 1:
    raise SystemExit(f"error: {k} context frames + horizon {horizon} need {k + horizon - 1} actions, "
                     f"{f.actions} has {acts.shape[1]}")
  bar = tqdm(total=horizon, desc="frames", unit="frame", disable=not f.progress)

  def progress(frame):
    bar.n = int(frame) - k
    bar.refresh()

  latents, frames = sess.rollout_with_context(ctx, acts[:, k - 1:k - 1 + horizon], guidance_scale=scale,
                                              seed=f.seed, context_actions=acts[:, :k - 1], progress=progress)
  bar.close()
  write_output(f.out, frames, latents)
  print(f"wrote {f.out}: {frames.shape[0]} rollout(s) of {frames.shape[1]} frames "
        f"({k} context + {horizon} generated), guidance {scale}", file=sys.stderr)


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
  from vid2world_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.reexec_with_huge_pages()   # first: restarts once with glibc.malloc.hugetlb=1 where it helps
  from absl import app
  define_rollout_flags()
  from vid2world_jax import logging_utils  # pylint: disable=import-outside-toplevel
  app.run(logging_utils.quiet_main(main), flags_parser=user_input.parse_flags)


if __name__ == "__main__":
  run()
