"""Where a play episode starts: context frames from a file, or from the embedded simulator of the config.

* a file (``--context``): a video (``video_io.read_video``) or an ``.npz`` with ``frames`` (``[k, H, W, 3]`` or
  ``[B, k, H, W, 3]``, the first clip is used) and optionally ``actions`` (``[>= k - 1, A]``, the actions between
  the context frames; zeros otherwise). The same frames at every reset.
* the embedded simulator (``data.source = "embedded"``): MinAtar Breakout (``data/breakout.py``) or Meta-World
  (``data/simulator.py``) reset to the episode's seed; with k > 1 context frames its scripted policy ("tracker"
  / "expert") plays the first k - 1 actions. A new seed gives a new start.
"""

from __future__ import annotations

import os

import numpy as np

from vid2world_jax import user_input, video_io
from vid2world_jax.data import video_ops
from vid2world_jax.play.game import Context
from vid2world_jax.user_input import UserInputError


def _fit(frames: np.ndarray, frame_shape) -> np.ndarray:
  h, w, _ = frame_shape
  return frames if frames.shape[1:3] == (h, w) else video_ops.resize_frames(frames, h, w)


def from_file(path: str, k: int, frame_shape, action_dim: int):
  """``context_fn(seed)`` returning the first ``k`` frames of ``path`` (resized to ``frame_shape`` if needed)."""
  actions = None
  if path.endswith(".npz"):
    arrays = user_input.read_npz(path, "context")
    if "frames" not in arrays:
      raise UserInputError(f"context {path}: expected an array named 'frames', found {sorted(arrays)}")
    frames, actions = arrays["frames"], arrays.get("actions")
  else:
    if not os.path.exists(path):
      raise FileNotFoundError(f"context not found: {path!r}")
    frames = video_io.read_video(path)
  if frames.ndim == 5:
    frames = frames[0]
    actions = None if actions is None or actions.ndim != 3 else actions[0]
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape[1:]:
    raise UserInputError(f"context {path}: frames must be uint8 [k, H, W, 3], got {frames.dtype} {frames.shape}")
  if frames.shape[0] < k:
    raise UserInputError(f"context {path}: {frames.shape[0]} frames, the model needs {k} context frames")
  frames = _fit(np.ascontiguousarray(frames[:k]), frame_shape)
  if actions is None:
    actions = np.zeros((k - 1, action_dim), np.float32)
  elif actions.ndim != 2 or actions.shape[0] < k - 1 or actions.shape[1] != action_dim:
    raise UserInputError(f"context {path}: 'actions' must be [>= {k - 1}, {action_dim}], got {actions.shape}")
  else:
    actions = user_input.require_finite(actions, path, "context actions", np.float32)
  ctx = Context(frames, np.asarray(actions[:k - 1], np.float32), f"file:{os.path.abspath(path)}")
  return lambda seed: ctx


def embedded(cfg, k: int, frame_shape):
  """``context_fn(seed)`` from the config's embedded simulator (Breakout or Meta-World)."""
  env = cfg.data.embedded.env
  if env == "breakout":
    from vid2world_jax.data import breakout  # pylint: disable=import-outside-toplevel

    def fn(seed):
      ep = breakout.run_policy("tracker", int(seed), steps=k - 1)
      if ep["frames"].shape[0] < k:
        raise ValueError(f"Breakout episode of seed {seed} ended before {k} context frames")
      return Context(_fit(ep["frames"][:k], frame_shape), ep["actions"][:k - 1].astype(np.float32),
                     f"breakout:seed={int(seed)}")
    return fn
  if env == "metaworld":
    from vid2world_jax.data import simulator  # pylint: disable=import-outside-toplevel

    def fn(seed):
      ep = simulator.run_policy("expert", int(seed), steps=k - 1)
      return Context(_fit(ep["frames"][:k], frame_shape), ep["actions"][:k - 1].astype(np.float32),
                     f"metaworld:{simulator.ENV_NAME}:seed={int(seed)}")
    return fn
  raise UserInputError(f"no embedded simulator {env!r} (known: breakout, metaworld)")


def for_config(cfg, context_path: str | None, k: int, frame_shape, action_dim: int):
  """The context source: ``context_path`` when given, else the config's embedded simulator."""
  if context_path:
    return from_file(context_path, k, frame_shape, action_dim)
  if cfg.data.get("source") == "embedded":
    return embedded(cfg, k, frame_shape)
  raise UserInputError(f"data.source={cfg.data.get('source')!r} has no simulator to draw context frames from: "
                   "pass --context=<video or .npz>")
