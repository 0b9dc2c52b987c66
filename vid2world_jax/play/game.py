"""The play loop without the web page: a world model stepped one frame per action, and its recordings.

``Player`` holds one episode: the context frames (from ``contexts``), then one generated frame per ``step``. It
runs on any ``Stepper`` (the ``start``/``step`` half of ``inference.InferenceSession``), so it is tested with
the real session and needs nothing of HTTP. Every episode is kept in memory from its reset; ``save`` writes it:

  <out_dir>/<name>/session.mp4     context + generated frames (H.264, for watching)
                   frames.npz      ``frames`` uint8 [k + T, H, W, 3], the exact frames shown
                   context.npz     ``frames`` uint8 [k, H, W, 3]: the rollout CLI's --context
                   actions.npy     float32 [k - 1 + T, A]: the context actions then the T played actions, the
                                   rollout CLI's --actions layout (actions[f] is taken at frame f)
                   session.json    seed, guidance scale, context source, key map, sampler, and the rollout CLI
                                   command that regenerates frames.npz from context.npz + actions.npy

Replaying is exact when the guidance scale stayed constant over the episode (``session.json`` says
``"replayable"``); changing it mid-episode is allowed and recorded per frame (``guidance_per_frame``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import threading
import time
from typing import Any, Protocol

import numpy as np

from vid2world_jax import user_input, video_io
from vid2world_jax.play import keymaps as keymaps_lib
from vid2world_jax.user_input import UserInputError


class Stepper(Protocol):
  """What the player needs of a model (``inference.InferenceSession`` has it)."""
  frame_shape: tuple
  action_dim: int

  def start(self, context_u8, *, seed: int, context_actions=None) -> Any: ...

  def step(self, state, action, *, guidance_scale: float) -> tuple[np.ndarray, Any]: ...


@dataclasses.dataclass
class Context:
  """Where an episode starts: frames uint8 ``[k, H, W, 3]``, actions between them ``[k - 1, A]``."""
  frames: np.ndarray
  actions: np.ndarray
  source: str


class Player:
  """One interactive episode at a time; thread-safe (the web server calls it from request threads)."""

  def __init__(self, stepper: Stepper, keymap: keymaps_lib.KeyMap, context_fn, *, guidance_scale: float,
               seed: int = 0, out_dir: str = "play_recordings", video_fps: float = 8.0,
               replay_command: list[str] | None = None, info: dict | None = None):
    """``context_fn(seed) -> Context``. ``replay_command``: the rollout CLI's command line without the
    ``--context/--actions/--seed/--guidance/--out`` flags (the recording adds them)."""
    if keymap.action_dim != stepper.action_dim:
      raise UserInputError(f"key map {keymap.name} is {keymap.action_dim}-dim, the model takes {stepper.action_dim}")
    self.stepper, self.keymap, self.context_fn = stepper, keymap, context_fn
    self.guidance_scale = float(guidance_scale)
    self.out_dir, self.video_fps = out_dir, float(video_fps)
    self.replay_command = list(replay_command or [])
    self.info = dict(info or {})
    self._lock = threading.Lock()
    self._saved = 0
    self.reset(seed)

  # -- the episode ---------------------------------------------------------------------------------------------

  def reset(self, seed: int | None = None) -> np.ndarray:
    """New episode from the context of ``seed`` (default: the current seed + 1). Returns the last context
    frame."""
    with self._lock:
      seed = (self.seed + 1) if seed is None else int(seed)
      ctx = self.context_fn(seed)
      h, w, _ = self.stepper.frame_shape
      k = ctx.frames.shape[0]
      if ctx.frames.dtype != np.uint8 or ctx.frames.shape[1:] != (h, w, 3) or k < 1:
        raise ValueError(f"context must be uint8 [k, {h}, {w}, 3], got {ctx.frames.dtype} {ctx.frames.shape}")
      if ctx.actions.shape != (k - 1, self.stepper.action_dim):
        raise ValueError(f"context actions must be [{k - 1}, {self.stepper.action_dim}], got {ctx.actions.shape}")
      self.seed, self.context = seed, ctx
      self._state = self.stepper.start(ctx.frames[None], seed=seed, context_actions=ctx.actions[None])
      self.frames = list(ctx.frames)
      self.actions: list[np.ndarray] = []
      self.guidance: list[float] = []
      self.step_seconds: list[float] = []
      return self.frames[-1]

  def step(self, keys=(), mouse_dx: float = 0.0, mouse_dy: float = 0.0, buttons=()) -> dict:
    """One frame for the keys held (KeyboardEvent.code names) and the mouse: ``{"frame", "action", "index",
    "step_ms"}``."""
    action = self.keymap.action(keys, mouse_dx, mouse_dy, buttons)
    with self._lock:
      t0 = time.perf_counter()
      frame, self._state = self.stepper.step(self._state, action[None], guidance_scale=self.guidance_scale)
      dt = time.perf_counter() - t0
      frame = np.asarray(frame)[0]
      self.frames.append(frame)
      self.actions.append(action)
      self.guidance.append(self.guidance_scale)
      self.step_seconds.append(dt)
      return {"frame": frame, "action": action, "index": len(self.actions), "step_ms": 1000.0 * dt}

  def set_guidance(self, scale: float) -> float:
    scale = float(scale)
    if not np.isfinite(scale) or scale < 0:
      raise ValueError(f"guidance scale must be a finite number >= 0, got {scale}")
    with self._lock:
      self.guidance_scale = scale
    return scale

  def status(self) -> dict:
    with self._lock:
      return {"seed": self.seed, "steps": len(self.actions), "context_frames": int(self.context.frames.shape[0]),
              "guidance_scale": self.guidance_scale, "context_source": self.context.source,
              "keymap": self.keymap.name, "keys": self.keymap.table(), "uses_mouse": self.keymap.uses_mouse,
              "action_dim": self.keymap.action_dim, "frame_shape": list(self.stepper.frame_shape),
              "recent_step_ms": 1000.0 * float(np.mean(self.step_seconds[-10:])) if self.step_seconds else None,
              "saved": self._saved}

  # -- recording -----------------------------------------------------------------------------------------------

  def save(self, name: str | None = None) -> dict:
    """Write the episode so far (see module doc); returns ``{"dir", "files", "frames", "replay_command"}``."""
    with self._lock:
      if not self.actions:
        raise ValueError("nothing to save: no frame was played since the reset")
      name = name or f"rec_{self._saved + 1:03d}_seed{self.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
      d = os.path.abspath(os.path.join(self.out_dir, name))
      with user_input.atomic_output(d) as tmp:   # a failed save leaves no partial recording behind
        os.makedirs(tmp)
        self._write_recording(d, tmp)
      self._saved += 1
      with open(os.path.join(d, "session.json")) as f:
        replay_command = json.load(f)["replay_command"]
      return {"dir": d, "files": sorted(os.listdir(d)), "frames": len(self.frames),
              "replay_command": replay_command}

  def _write_recording(self, d: str, tmp: str) -> None:
    """The recording's files into ``tmp`` (renamed to ``d`` by the caller); paths in session.json name ``d``."""
    frames = np.stack(self.frames)
    actions = np.concatenate([self.context.actions, np.stack(self.actions)], 0).astype(np.float32)
    np.savez_compressed(os.path.join(tmp, "frames.npz"), frames=frames)
    np.savez_compressed(os.path.join(tmp, "context.npz"), frames=self.context.frames)
    np.save(os.path.join(tmp, "actions.npy"), actions)
    video_io.write_video(os.path.join(tmp, "session.mp4"), frames, fps=self.video_fps)
    constant = len(set(self.guidance)) == 1
    k = int(self.context.frames.shape[0])
    replay = self.replay_command + [
        f"--context={os.path.join(d, 'context.npz')}", f"--actions={os.path.join(d, 'actions.npy')}",
        f"--context_frames={k}", f"--seed={self.seed}", f"--guidance={self.guidance[0]!r}",
        f"--out={os.path.join(d, 'replay.npz')}"]
    meta = {"seed": self.seed, "guidance_scale": self.guidance[0] if constant else None,
            "guidance_per_frame": self.guidance, "replayable": constant, "context_source": self.context.source,
            "context_frames": k, "generated_frames": len(self.actions), "keymap": self.keymap.name,
            "step_ms_mean": 1000.0 * float(np.mean(self.step_seconds)),
            "replay_command": shlex.join(replay) if constant and self.replay_command else None, **self.info}
    with open(os.path.join(tmp, "session.json"), "w") as f:
      json.dump(meta, f, indent=1)
