"""The world model as a gymnasium environment (single and batched vector versions).

``reset`` takes context frames (``options={"context": uint8 [k, H, W, 3]}``, optional ``"context_actions"``
``[k - 1, A]``; without options a context is drawn from ``initial_contexts`` with the env's seeded RNG) and returns
the last context frame; ``step(action)`` generates the next frame autoregressively (``InferenceSession.step``:
same sampler, guidance, sliding window and noise as ``InferenceSession.rollout``; episode i of a reset with seed
s_i equals ``session.rollout(..., seed=[s_i])``) and returns it.

Observations are uint8 RGB ``[H, W, 3]`` (``Box(0, 255)``); actions are float32 ``[A]`` (``Box(low, high)``).
Optional user functions on the frames of the episode so far (uint8 ``[t, H, W, 3]``, context included):
``reward_fn(frames) -> float`` (default reward 0) and ``success_fn(frames) -> bool`` (terminates the episode and
sets ``info["success"]``). ``max_episode_steps`` truncates.

The vector version (``WorldModelVectorEnv``) runs ``num_envs`` rollouts in ONE batched network call per step;
it does not auto-reset (``AutoresetMode.DISABLED``): call ``reset`` with new contexts when episodes end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


FramesFn = Callable[[np.ndarray], Any]


class _Engine:
  """Batched episode state shared by both environments: an ``inference.InferenceSession`` stepped one frame at a
  time (``start``/``step``) and the frames so far."""

  def __init__(self, session, guidance_scale: float | None):
    self.session = session
    self.guidance_scale = session.guidance_scale if guidance_scale is None else float(guidance_scale)
    self.frame_shape = tuple(session.frame_shape)
    self.action_dim = int(session.action_dim)
    self.state = None
    self.frames: list[np.ndarray] = []   # per step: uint8 [B, H, W, 3]

  def start(self, context_u8: np.ndarray, context_actions: np.ndarray | None, seeds: np.ndarray) -> np.ndarray:
    context_u8 = np.asarray(context_u8)
    if context_u8.ndim != 5 or tuple(context_u8.shape[2:]) != self.frame_shape:
      raise ValueError(f"context must be uint8 [k, {', '.join(map(str, self.frame_shape))}] per env, "
                       f"got shape {context_u8.shape[1:]}")
    if context_u8.dtype != np.uint8:
      raise ValueError(f"context frames must be uint8 RGB, got {context_u8.dtype}")
    b, k = context_u8.shape[:2]
    if context_actions is not None and np.shape(context_actions) != (b, k - 1, self.action_dim):
      raise ValueError(f"context_actions must be [k - 1, A] = [{k - 1}, {self.action_dim}] per env, "
                       f"got shape {np.shape(context_actions)[1:]}")
    self.state = self.session.start(context_u8, seed=np.asarray(seeds, np.int64), context_actions=context_actions)
    self.frames = [context_u8[:, j].copy() for j in range(k)]
    return context_u8[:, -1].copy()

  def step(self, actions: np.ndarray) -> np.ndarray:
    if self.state is None:
      raise RuntimeError("call reset() before step()")
    frame, self.state = self.session.step(self.state, actions, guidance_scale=self.guidance_scale)
    self.frames.append(frame)
    return frame.copy()

  def episode_frames(self, i: int) -> np.ndarray:
    return np.stack([f[i] for f in self.frames])


def _action_space(action_dim: int, low, high) -> spaces.Box:
  return spaces.Box(low=np.broadcast_to(np.asarray(low, np.float32), (action_dim,)).copy(),
                    high=np.broadcast_to(np.asarray(high, np.float32), (action_dim,)).copy(), dtype=np.float32)


def _check_space(space, action_dim):
  """A user-given action space (e.g. ``MultiBinary(51)`` for CS:GO): its samples must flatten to ``[A]``."""
  if space is None:
    return None
  if not isinstance(space, spaces.Space) or space.shape != (action_dim,):
    raise ValueError(f"action_space must be a gymnasium Space of shape ({action_dim},), got {space!r}")
  return space


def _check_contexts(initial_contexts, frame_shape):
  if initial_contexts is None:
    return None
  c = np.asarray(initial_contexts)
  if c.ndim != 5 or tuple(c.shape[2:]) != tuple(frame_shape) or c.dtype != np.uint8:
    raise ValueError(f"initial_contexts must be uint8 [N, k, {', '.join(map(str, frame_shape))}], "
                     f"got {c.dtype} {c.shape}")
  return c


class WorldModelEnv(gym.Env):
  """A single rollout of the world model as a gymnasium ``Env``.

  Args:
    session: the world model (``inference.InferenceSession``: frame shape, action dim, sampler).
    guidance_scale: causal action guidance scale of every step (default: the session's run default).
    action_low / action_high: bounds of the action Box.
    initial_contexts: uint8 ``[N, k, H, W, 3]`` contexts ``reset`` draws from when no context is given.
    reward_fn / success_fn: optional functions of the episode's frames (see module doc).
    max_episode_steps: truncation horizon (None = never).
  """

  metadata = {"render_modes": ["rgb_array"], "render_fps": 3}

  def __init__(self, session, *, guidance_scale: float | None = None, action_low=-1.0, action_high=1.0,
               initial_contexts: np.ndarray | None = None, reward_fn: FramesFn | None = None,
               success_fn: FramesFn | None = None, max_episode_steps: int | None = None,
               render_mode: str | None = None, action_space: spaces.Space | None = None):
    if render_mode is not None and render_mode not in self.metadata["render_modes"]:
      raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    self.render_mode = render_mode
    self._engine = _Engine(session, guidance_scale)
    frame_shape, action_dim = self._engine.frame_shape, self._engine.action_dim
    self.observation_space = spaces.Box(0, 255, tuple(frame_shape), np.uint8)
    self.action_space = _check_space(action_space, action_dim) or _action_space(action_dim, action_low, action_high)
    self._contexts = _check_contexts(initial_contexts, frame_shape)
    self.reward_fn, self.success_fn = reward_fn, success_fn
    self.max_episode_steps = max_episode_steps
    self._steps = 0
    self._last = None

  def reset(self, *, seed: int | None = None, options: dict | None = None):
    super().reset(seed=seed)
    options = options or {}
    context = options.get("context")
    if context is None:
      if self._contexts is None:
        raise ValueError("reset needs options={'context': uint8 [k, H, W, 3]} (no initial_contexts given)")
      context = self._contexts[int(self.np_random.integers(len(self._contexts)))]
    context = np.asarray(context)
    ca = options.get("context_actions")
    ca = None if ca is None else np.asarray(ca, np.float32)[None]
    rng_seed = int(self.np_random.integers(0, 2**31 - 1))
    self._last_seed = rng_seed   # the rollout seed of this episode (session.rollout(..., seed=[it]) replays it)
    obs = self._engine.start(context[None], ca, np.asarray([rng_seed]))[0]
    self._steps = 0
    self._last = obs.copy()
    return obs, {"frame_index": int(context.shape[0]) - 1}

  def step(self, action):
    action = np.asarray(action, np.float32)
    if action.shape != self.action_space.shape:
      raise ValueError(f"action must have shape {self.action_space.shape} (action_dim), got {action.shape}")
    obs = self._engine.step(action[None])[0]
    self._steps += 1
    self._last = obs.copy()
    frames = self._engine.episode_frames(0)
    reward = float(self.reward_fn(frames)) if self.reward_fn is not None else 0.0
    success = bool(self.success_fn(frames)) if self.success_fn is not None else False
    truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
    info = {"frame_index": len(frames) - 1, "success": success}
    return obs, reward, success, bool(truncated), info

  def render(self):
    if self.render_mode == "rgb_array":
      return None if self._last is None else self._last.copy()
    return None

  def episode_frames(self) -> np.ndarray:
    """uint8 ``[t, H, W, 3]``: the context followed by every generated frame of the current episode."""
    return self._engine.episode_frames(0)


class WorldModelVectorEnv(VectorEnv):
  """``num_envs`` world-model rollouts stepped together in one batched network call (no auto-reset).

  Same arguments as ``WorldModelEnv`` plus ``num_envs``; ``reset(options={"context": uint8 [num_envs, k, H, W,
  3]})`` (optional ``"context_actions"`` ``[num_envs, k - 1, A]``)."""

  metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.DISABLED}

  def __init__(self, session, *, num_envs: int, guidance_scale: float | None = None, action_low=-1.0,
               action_high=1.0, initial_contexts: np.ndarray | None = None, reward_fn: FramesFn | None = None,
               success_fn: FramesFn | None = None, max_episode_steps: int | None = None,
               action_space: spaces.Space | None = None):
    if num_envs < 1:
      raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    self.num_envs = int(num_envs)
    self._engine = _Engine(session, guidance_scale)
    frame_shape, action_dim = self._engine.frame_shape, self._engine.action_dim
    self.single_observation_space = spaces.Box(0, 255, tuple(frame_shape), np.uint8)
    self.single_action_space = (_check_space(action_space, action_dim)
                                or _action_space(action_dim, action_low, action_high))
    self.observation_space = batch_space(self.single_observation_space, self.num_envs)
    self.action_space = batch_space(self.single_action_space, self.num_envs)
    self._contexts = _check_contexts(initial_contexts, frame_shape)
    self.reward_fn, self.success_fn = reward_fn, success_fn
    self.max_episode_steps = max_episode_steps
    self._steps = 0

  def reset(self, *, seed: int | None = None, options: dict | None = None):
    super().reset(seed=seed)
    options = options or {}
    context = options.get("context")
    if context is None:
      if self._contexts is None:
        raise ValueError("reset needs options={'context': uint8 [num_envs, k, H, W, 3]} (no initial_contexts)")
      context = self._contexts[self.np_random.integers(len(self._contexts), size=self.num_envs)]
    context = np.asarray(context)
    if context.ndim != 5 or context.shape[0] != self.num_envs:
      raise ValueError(f"context must be [num_envs={self.num_envs}, k, H, W, 3], got shape {context.shape}")
    ca = options.get("context_actions")
    seeds = self.np_random.integers(0, 2**31 - 1, size=self.num_envs)
    self._last_seeds = seeds   # per-env rollout seeds of these episodes
    obs = self._engine.start(context, None if ca is None else np.asarray(ca, np.float32), seeds)
    self._steps = 0
    return obs, {"frame_index": np.full(self.num_envs, context.shape[1] - 1)}

  def step(self, actions):
    actions = np.asarray(actions, np.float32)
    if actions.shape != self.action_space.shape:
      raise ValueError(f"actions must have shape {self.action_space.shape} ([num_envs, action_dim]), "
                       f"got {actions.shape}")
    obs = self._engine.step(actions)
    self._steps += 1
    rewards = np.zeros(self.num_envs, np.float64)
    success = np.zeros(self.num_envs, bool)
    for i in range(self.num_envs):
      if self.reward_fn is not None or self.success_fn is not None:
        frames = self._engine.episode_frames(i)
        if self.reward_fn is not None:
          rewards[i] = float(self.reward_fn(frames))
        if self.success_fn is not None:
          success[i] = bool(self.success_fn(frames))
    truncated = np.full(self.num_envs, self.max_episode_steps is not None and self._steps >= self.max_episode_steps)
    n = len(self._engine.frames)
    return obs, rewards, success, truncated, {"success": success, "frame_index": np.full(self.num_envs, n - 1)}

  def episode_frames(self) -> np.ndarray:
    """uint8 ``[num_envs, t, H, W, 3]``."""
    return np.stack([self._engine.episode_frames(i) for i in range(self.num_envs)])
