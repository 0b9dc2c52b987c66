"""Recording the embedded Breakout dataset (``breakout``'s game and policies) and the detector fit on it.

``embedded_dataset_dir`` records every policy of ``data.embedded.policies`` from seeds 1000.. (episodes kept
whole, misses included, ``breakout.run_policy``), caches the recording under a folder named by its settings, and
``fit_detector`` fits the cell detector on its real frames and simulator labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from vid2world_jax.data import episodes as episodes_lib
from vid2world_jax.data.breakout import (ACTION_DIM, ACTIONS, CATCH_POLICIES, ENV_NAME, EXPLORE_MEAN_RUN,
                                         EXPLORE_POLICIES, FORMAT_VERSION, POLICIES, RECORDED_POLICIES, RESOLUTION,
                                         CellDetector, run_policy)


def record_dataset(out_dir: str, *, episodes_per_policy: int, steps: int, policies=RECORDED_POLICIES,
                   base_seed: int = 1000, min_length: int = 9, miss_hold: int = 6, progress: bool = True) -> dict:
  """Records episodes_per_policy episodes per policy (generic episode format + labels + meta.json + splits.json).

  The last ``max(1, episodes_per_policy // 8)`` episodes of every policy are the "test" split (unseen initial
  states: seeds base_seed + k differ between episodes). A missed ball is followed by ``miss_hold`` frames of the
  frozen screen (``run_policy``); episodes still shorter than ``min_length`` frames are not written (counted in
  meta.json)."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  import minatar  # pylint: disable=import-outside-toplevel
  os.makedirs(out_dir, exist_ok=True)
  t0 = time.time()
  eps, train, test, short = [], [], [], 0
  n_test = max(1, episodes_per_policy // 8)
  with tqdm(total=len(policies) * episodes_per_policy, desc=f"recording {ENV_NAME}", unit="episode",
            disable=not progress) as bar:
    for pi, pname in enumerate(policies):
      for k in range(episodes_per_policy):
        seed = base_seed + k
        r = run_policy(pname, seed, steps=steps, policy_seed=seed * 1000 + pi, miss_hold=miss_hold)
        bar.update(1)
        if len(r["frames"]) < min_length:
          short += 1
          continue
        name = f"{pname}_{k:04d}"
        episodes_lib.write_episode(os.path.join(out_dir, name + ".npz"), r["frames"], r["actions"], r["done"])
        np.save(os.path.join(out_dir, name + ".labels.npy"), r["labels"].astype(np.uint8))
        eps.append({"name": name, "policy": pname, "seed": seed, "return": r["return"], "length": len(r["frames"]),
                    "miss_frame": r["miss_frame"]})
        (test if k >= episodes_per_policy - n_test else train).append(name)
  meta = {
      "format_version": FORMAT_VERSION, "simulator": "minatar", "env": ENV_NAME,
      "minatar_version": getattr(minatar, "__version__", "1.0.15"), "resolution": [RESOLUTION, RESOLUTION],
      "action_dim": ACTION_DIM, "actions": list(ACTIONS), "policies": list(policies),
      "mean_return": {p: float(np.mean([e["return"] for e in eps if e["policy"] == p] or [0.0])) for p in policies},
      "misses": {p: int(sum(e["miss_frame"] is not None for e in eps if e["policy"] == p)) for p in policies},
      "miss_hold": int(miss_hold), "episodes": eps, "skipped_short": short,
      "recording_seconds": round(time.time() - t0, 2),
  }
  return episodes_lib.write_recording_index(out_dir, meta, train, test)


default_cache_dir = episodes_lib.default_cache_dir


def embedded_dataset_dir(cache_dir: str | None = None, *, episodes_per_policy: int = 64, steps: int = 40,
                         policies=RECORDED_POLICIES, miss_hold: int = 6, progress: bool = True) -> str:
  """Path of the recorded Breakout dataset; records it on first use (seconds) and caches it on disk. The folder
  name holds every recording setting, so recordings made with other settings never mix."""
  policies = tuple(policies)
  unknown = [p for p in policies if p not in POLICIES and p not in EXPLORE_POLICIES and p not in CATCH_POLICIES]
  if unknown or not policies:
    raise ValueError(f"data.embedded.policies must name recording policies "
                     f"{list(POLICIES) + list(EXPLORE_POLICIES) + list(CATCH_POLICIES)}, got {list(policies)}")
  root = cache_dir or default_cache_dir()
  tag = hashlib.sha1(json.dumps([list(policies), int(miss_hold), EXPLORE_MEAN_RUN]).encode()).hexdigest()[:8]
  d = os.path.join(root, f"{ENV_NAME}_s{steps}_e{episodes_per_policy}_v{FORMAT_VERSION}_{tag}")
  return episodes_lib.cached_recording(d, lambda tmp: record_dataset(
      tmp, episodes_per_policy=episodes_per_policy, steps=steps, policies=policies, miss_hold=miss_hold,
      progress=progress))


def fit_detector(dataset_dir: str, max_episodes: int = 64) -> CellDetector:
  """The detector fit on the recorded (real) training frames and their simulator labels."""
  with open(os.path.join(dataset_dir, "splits.json")) as f:
    names = json.load(f)["train"][:max_episodes]
  frames, labels = [], []
  for n in names:
    with np.load(os.path.join(dataset_dir, n + ".npz")) as z:
      frames.append(z["frames"].astype(np.float32) / 255.0)
    labels.append(np.load(os.path.join(dataset_dir, n + ".labels.npy")))
  return CellDetector.fit(np.concatenate(frames), np.concatenate(labels))
