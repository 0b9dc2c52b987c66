"""The embedded simulator dataset: Meta-World drawer-close-v3 episodes recorded with policies of several qualities.

Real simulator (MuJoCo via `metaworld`, rendered offscreen with MUJOCO_GL=egl), nothing synthetic. Used as the
default training/evaluation data of the CPU run and, through `run_policy`, for policy evaluation in the real
simulator (the analogue of the paper's Real2Sim "close drawer" evaluation, spec §8.4).

Episode protocol (`run_policy`): the initial state is fixed by `seed` (drawer position sampled from the task's
reset space with np.random.default_rng(seed)); frame t is rendered, the policy picks a_t from the state
observation, a_t is held for `action_repeat` physics steps; after `steps` actions one more frame is rendered and
the policy's action for it is recorded but not executed, so frames [steps+1, H, W, 3] and actions [steps+1, 4]
(Meta-World's 4-dim action: end-effector dx, dy, dz in [-1, 1] and gripper effort). `success` = Meta-World's
success flag after the last executed step (drawer closed), `success_step` = first frame index at which it held.

Process isolation: MuJoCo's EGL rendering (Mesa llvmpipe) and TensorFlow crash (segfault) when both live in
one process (measured here), so `make_env()` / `run_policy()` / recording run the simulator in a spawned child
process by default (`RemoteSim`); the policy itself runs in the caller's process. `make_env(isolated=False)`
gives the in-process `LocalSim` for processes that never import tensorflow.

Policies (quality levels, best to worst): "expert" (metaworld's scripted SawyerDrawerCloseV3Policy),
"expert_noise1.0", "expert_noise2.0", "expert_noise4.0" (expert + Gaussian action noise of that std, clipped to
[-1, 1]) and "random" (uniform in [-1, 1]^4).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import numpy as np  # noqa: E402

from vid2world_jax.data import episodes as episodes_lib  # noqa: E402

ENV_NAME = "drawer-close-v3"
ACTION_DIM = 4
ACTION_REPEAT = 2
POLICIES = {"expert": 0.0, "expert_noise1.0": 1.0, "expert_noise2.0": 2.0, "expert_noise4.0": 4.0, "random": None}
FORMAT_VERSION = 1


def _make_raw_env(resolution: int = 64, camera_name: str = "corner2"):
  """The raw (unwrapped) Meta-World drawer-close env rendering `resolution`^2 RGB frames (in THIS process)."""
  import gymnasium as gym  # pylint: disable=import-outside-toplevel
  import metaworld  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import mujoco  # pylint: disable=import-outside-toplevel
  env = gym.make("Meta-World/MT1", env_name=ENV_NAME, render_mode="rgb_array", width=int(resolution),
                 height=int(resolution), camera_name=camera_name).unwrapped
  # Shadows and reflections cost ~2/3 of the software-rendering time at 64x64 and add little at this size.
  viewer = env.mujoco_renderer._get_viewer("rgb_array")  # pylint: disable=protected-access
  viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
  viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
  return env


class LocalSim:
  """The simulator in this process: reset(seed) -> (obs, frame); step(action, repeat) -> (obs, success, frame).

  Frames are uint8 [R, R, 3] RGB, upright. Do NOT use in a process that imports tensorflow: MuJoCo's EGL
  (Mesa llvmpipe) rendering and TensorFlow segfault in one process (measured here); use RemoteSim there."""

  def __init__(self, resolution: int = 64):
    self.resolution = int(resolution)
    self.env = _make_raw_env(self.resolution)

  def _frame(self):
    return np.ascontiguousarray(np.asarray(self.env.render(), np.uint8)[::-1])  # GL rows are bottom-up

  def reset(self, seed: int):
    return reset_to_seed(self.env, seed), self._frame()

  def step(self, action, repeat: int = ACTION_REPEAT):
    for _ in range(repeat):
      obs, _, _, _, info = self.env.step(np.asarray(action, np.float32))
    return np.asarray(obs), bool(info["success"]), self._frame()

  def close(self):
    try:
      self.env.close()
    except Exception:  # noqa: BLE001 - EGL teardown noise at exit
      pass


def _sim_server(conn, resolution):
  sim = LocalSim(resolution)
  try:
    while True:
      cmd, args = conn.recv()
      if cmd == "close":
        break
      try:
        conn.send(("ok", getattr(sim, cmd)(*args)))
      except Exception as e:  # noqa: BLE001 - report to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
  finally:
    sim.close()
    conn.close()


class RemoteSim:
  """LocalSim in a spawned child process (same interface), so the caller may import tensorflow/jax freely."""

  def __init__(self, resolution: int = 64):
    import multiprocessing as mp  # pylint: disable=import-outside-toplevel
    ctx = mp.get_context("spawn")
    self._conn, child = ctx.Pipe()
    self._proc = ctx.Process(target=_sim_server, args=(child, int(resolution)), daemon=True)
    self._proc.start()
    child.close()
    self.resolution = int(resolution)

  def _call(self, cmd, *args):
    self._conn.send((cmd, args))
    try:
      status, value = self._conn.recv()
    except EOFError as e:
      raise RuntimeError(f"simulator process died (exit code {self._proc.exitcode})") from e
    if status == "error":
      raise RuntimeError(f"simulator process: {value}")
    return value

  def reset(self, seed: int):
    return self._call("reset", int(seed))

  def step(self, action, repeat: int = ACTION_REPEAT):
    return self._call("step", np.asarray(action, np.float32), int(repeat))

  def close(self):
    if self._proc.is_alive():
      try:
        self._conn.send(("close", ()))
      except OSError:
        pass
      self._proc.join(timeout=10)
      if self._proc.is_alive():
        self._proc.terminate()
    self._conn.close()


def make_env(resolution: int = 64, *, isolated: bool = True):
  """A drawer-close simulator (reset/step/close, see LocalSim). isolated=True (default) runs it in a spawned
  child process (required when tensorflow is or will be imported in this process; scripts need an
  `if __name__ == "__main__":` guard as with any spawn)."""
  return RemoteSim(resolution) if isolated else LocalSim(resolution)


def close_env(env) -> None:
  env.close()


class ScriptedPolicy:
  """Meta-World's scripted expert with optional Gaussian action noise, or uniform random (noise_std=None)."""

  def __init__(self, noise_std: float | None):
    from metaworld.policies import SawyerDrawerCloseV3Policy  # pylint: disable=import-outside-toplevel
    self.noise_std = noise_std
    self.expert = SawyerDrawerCloseV3Policy()

  def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if self.noise_std is None:
      return rng.uniform(-1.0, 1.0, ACTION_DIM).astype(np.float32)
    a = np.asarray(self.expert.get_action(obs), np.float32)
    if self.noise_std > 0:
      a = a + rng.normal(0.0, self.noise_std, ACTION_DIM).astype(np.float32)
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def make_policy(name: str) -> ScriptedPolicy:
  if name not in POLICIES:
    raise ValueError(f"unknown policy {name!r}; known: {list(POLICIES)}")
  return ScriptedPolicy(POLICIES[name])


def reset_to_seed(env, seed: int) -> np.ndarray:
  """Reset to the initial state fixed by `seed` (drawer position from the task's reset space); returns obs."""
  space = env._random_reset_space  # pylint: disable=protected-access
  vec = np.random.default_rng(seed).uniform(space.low, space.high).astype(np.float64)
  env._last_rand_vec = vec  # pylint: disable=protected-access
  env._freeze_rand_vec = True  # pylint: disable=protected-access
  env._set_task_called = True  # pylint: disable=protected-access
  obs, _ = env.reset(seed=int(seed))
  return np.asarray(obs)


def run_policy(policy, seed: int, *, steps: int = 50, resolution: int = 64, action_repeat: int = ACTION_REPEAT,
               env=None, policy_seed: int | None = None) -> dict:
  """Run `policy` (a name in POLICIES or a callable (state_obs, rng) -> action[4]) in the real simulator from the
  initial state fixed by `seed`. Returns {"frames": uint8 [steps+1, R, R, 3], "actions": float32 [steps+1, 4],
  "success": bool, "success_step": int (-1 if never)}. Pass `env` (make_env) to reuse a simulator; by default a
  process-isolated one is started and closed."""
  pol = make_policy(policy) if isinstance(policy, str) else policy
  own = env is None
  env = make_env(resolution) if own else env
  rng = np.random.default_rng(seed if policy_seed is None else policy_seed)
  try:
    obs, frame = env.reset(seed)
    frames, actions = [frame], []
    success, success_step = False, -1
    for t in range(steps + 1):
      a = np.asarray(pol(obs, rng), np.float32)
      if a.shape != (ACTION_DIM,):
        raise ValueError(f"policy returned action of shape {a.shape}, expected ({ACTION_DIM},)")
      actions.append(a)
      if t == steps:
        break
      obs, success, frame = env.step(a, action_repeat)
      frames.append(frame)
      if success and success_step < 0:
        success_step = t + 1
  finally:
    if own:
      env.close()
  return {"frames": np.stack(frames), "actions": np.stack(actions), "success": success,
          "success_step": success_step}


def record_dataset(out_dir: str, *, episodes_per_policy: int = 6, steps: int = 50, resolution: int = 64,
                   policies=tuple(POLICIES), base_seed: int = 1000, progress: bool = True) -> dict:
  """Record episodes_per_policy episodes per policy into out_dir (generic episode format + meta.json +
  splits.json: the last episode of each policy is "test" when episodes_per_policy >= 2). Episode k of every
  policy starts from the same initial state (seed base_seed + k). Returns the meta dict."""
  import metaworld  # pylint: disable=import-outside-toplevel
  import mujoco  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  t0 = time.time()
  env = make_env(resolution)  # process-isolated renderer (see LocalSim)
  eps, train, test = [], [], []
  try:
    with tqdm(total=len(policies) * episodes_per_policy, desc=f"recording Meta-World {ENV_NAME}",
              unit="episode", disable=not progress) as bar:
      for pi, pname in enumerate(policies):
        for k in range(episodes_per_policy):
          seed = base_seed + k
          r = run_policy(pname, seed, steps=steps, resolution=resolution, env=env,
                         policy_seed=seed * 1000 + pi)
          name = f"{pname}_{k:03d}"
          episodes_lib.write_episode(os.path.join(out_dir, name + ".npz"), r["frames"], r["actions"],
                                     r["success"])
          eps.append({"name": name, "policy": pname, "seed": seed, "success": r["success"],
                      "success_step": r["success_step"]})
          (test if (episodes_per_policy >= 2 and k == episodes_per_policy - 1) else train).append(name)
          bar.update(1)
          bar.set_postfix(policy=pname, success=r["success"])
  finally:
    close_env(env)
  meta = {
      "format_version": FORMAT_VERSION, "simulator": "metaworld", "env": ENV_NAME,
      "metaworld_version": getattr(metaworld, "__version__", "unknown"), "mujoco_version": mujoco.__version__,
      "resolution": [resolution, resolution], "action_dim": ACTION_DIM, "action_repeat": ACTION_REPEAT,
      "frames_per_episode": steps + 1, "policies": {p: POLICIES[p] for p in policies},
      "policy_success_rate": {p: float(np.mean([e["success"] for e in eps if e["policy"] == p])) for p in policies},
      "episodes": eps, "recording_seconds": round(time.time() - t0, 2),
  }
  return episodes_lib.write_recording_index(out_dir, meta, train, test)


default_cache_dir = episodes_lib.default_cache_dir


def embedded_dataset_dir(cache_dir: str | None = None, *, episodes_per_policy: int = 6, steps: int = 50,
                         resolution: int = 64, policies=None, progress: bool = True) -> str:
  """Path of the recorded embedded dataset; records it on first use (tqdm bar) and caches it on disk.

  cache_dir default: $V2W_CACHE/embedded or ~/.cache/vid2world_jax/embedded. One sub-directory per recording
  setting; a recording is written to a temporary directory and renamed into place when complete."""
  root = cache_dir or default_cache_dir()
  policies = tuple(POLICIES) if policies is None else tuple(policies)
  tag = "" if policies == tuple(POLICIES) else "_p" + "-".join(policies)
  d = os.path.join(root, f"{ENV_NAME}_r{resolution}_s{steps}_e{episodes_per_policy}{tag}_v{FORMAT_VERSION}")
  return episodes_lib.cached_recording(d, lambda tmp: record_dataset(
      tmp, episodes_per_policy=episodes_per_policy, steps=steps, resolution=resolution, policies=policies,
      progress=progress))
