"""WorldModelEnv / WorldModelVectorEnv over an inference session: gymnasium API (check_env), step == rollout,
reward/success hooks."""

import functools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import _rollout_helpers as h
from vid2world_jax.inference import envs

FRAME = (8, 8, 3)
SCALE = 2.5


@functools.lru_cache(maxsize=None)
def _session():
  return h.tiny_session("toy", window=4)


def _contexts(n=3, k=1, seed=0):
  return np.random.default_rng(seed).integers(0, 256, size=(n, k) + FRAME, dtype=np.uint8)


def _env(**kw):
  return envs.WorldModelEnv(_session(), guidance_scale=SCALE, initial_contexts=_contexts(), **kw)


def test_env_passes_gymnasium_check_env():
  env = _env(max_episode_steps=5, render_mode="rgb_array")
  check_env(env, skip_render_check=False)
  assert isinstance(env.observation_space, gym.spaces.Box) and env.observation_space.dtype == np.uint8
  assert env.action_space.shape == (3,)


def test_env_steps_reproduce_the_rollout_frames():
  """Stepping the env with actions a_0..a_4 (window 4, so the window slides) reproduces rollout()."""
  env = _env()
  ctx = _contexts(1, k=2, seed=5)[0]
  ca = np.asarray([[0.3, -0.2, 0.1]], np.float32)
  obs, info = env.reset(seed=11, options={"context": ctx, "context_actions": ca})
  np.testing.assert_array_equal(obs, ctx[-1])
  acts = np.random.default_rng(2).uniform(-1, 1, size=(5, 3)).astype(np.float32)
  for a in acts:
    obs, reward, terminated, truncated, info = env.step(a)
    assert env.observation_space.contains(obs) and reward == 0.0 and not terminated and not truncated
  frames = env.episode_frames()
  assert frames.shape == (7,) + FRAME
  # the same rollout through session.rollout (the jitted scan) with the env's seed: the same frames exactly
  seed = int(env._last_seed)
  want = _session().rollout(ctx[None], acts[None], guidance_scale=SCALE, seed=[seed], context_actions=ca[None])[0]
  np.testing.assert_array_equal(frames[2:], want)
  np.testing.assert_array_equal(frames[:2], ctx)
  assert np.abs(frames[-1].astype(int) - frames[-2].astype(int)).max() > 0


def test_env_reward_success_truncation_and_errors():
  calls = []

  def success_fn(frames):
    calls.append(frames.shape)
    return frames.shape[0] >= 3   # succeeds at the second generated frame

  env = _env(reward_fn=lambda f: float(f.shape[0]), success_fn=success_fn, max_episode_steps=4)
  env.reset(seed=0)
  _, r, term, trunc, info = env.step(np.zeros(3, np.float32))
  assert (r, term, trunc, info["success"]) == (2.0, False, False, False)
  _, r, term, trunc, info = env.step(np.zeros(3, np.float32))
  assert (r, term, info["success"]) == (3.0, True, True)
  assert calls[-1] == (3,) + FRAME
  env.step(np.zeros(3, np.float32))
  _, _, _, trunc, _ = env.step(np.zeros(3, np.float32))
  assert trunc
  with pytest.raises(ValueError, match="action must have shape"):
    env.step(np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="uint8"):
    env.reset(options={"context": np.zeros((1,) + FRAME, np.float32)})
  with pytest.raises(ValueError, match="context must be"):
    env.reset(options={"context": np.zeros((1, 4, 4, 3), np.uint8)})


def test_env_vector_version_matches_single_envs():
  venv = envs.WorldModelVectorEnv(_session(), num_envs=2, guidance_scale=SCALE, max_episode_steps=3,
                                  success_fn=lambda f: f.mean() > 300)   # never
  ctx = _contexts(2, k=1, seed=9)
  obs, info = venv.reset(seed=3, options={"context": ctx})
  assert obs.shape == (2,) + FRAME and venv.observation_space.contains(obs)
  acts = np.random.default_rng(0).uniform(-1, 1, size=(3, 2, 3)).astype(np.float32)
  for a in acts:
    obs, rew, term, trunc, info = venv.step(a)
  assert obs.shape == (2,) + FRAME and rew.shape == (2,) and not term.any() and trunc.all()
  vf = venv.episode_frames()
  assert vf.shape == (2, 4) + FRAME
  # env 1 alone with its seed gives the same frames (one key per rollout: batch-independent)
  seeds = venv._last_seeds
  want = _session().rollout(ctx[1:], acts[:, 1][None], guidance_scale=SCALE, seed=[int(seeds[1])])[0]
  np.testing.assert_array_equal(vf[1, 1:], want)
  with pytest.raises(ValueError, match="num_envs"):
    venv.step(np.zeros((3, 3), np.float32))


def test_env_accepts_discrete_multibinary_action_space():
  env = _env(action_space=gym.spaces.MultiBinary(3), max_episode_steps=3)
  check_env(env)
  env.reset(seed=1)
  obs, *_ = env.step(np.array([1, 0, 1], np.int8))
  assert env.observation_space.contains(obs)
  with pytest.raises(ValueError, match="shape"):
    _env(action_space=gym.spaces.MultiBinary(4))
