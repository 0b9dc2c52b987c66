"""Data pipeline throughput: clips/s per source at the config resolution.

rt1 / csgo / episodes read small files written here in the real formats (RLDS TFRecord with the fractal spec and
256x320 JPEGs; DIAMOND HDF5 with 150x280 BGR frames; generic .npz with 256x320 frames) and produce paper-size
clips (T=16, 320x512). embedded reads the real recorded Meta-World dataset (recorded first if not cached) at the
default config (T=16, 64x64). Last line: one JSON object.

  python benchmarks/data.py [--batches 6] [--batch_size 4] [--worker_count 0] [--sources rt1,csgo,episodes,embedded]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from vid2world_jax.data import config as config_lib  # noqa: E402
from vid2world_jax.data import csgo  # noqa: E402
from vid2world_jax.data import episodes as episodes_lib  # noqa: E402
from vid2world_jax.data import pipeline  # noqa: E402
from vid2world_jax.data import simulator  # noqa: E402
from vid2world_jax.data import testdata  # noqa: E402


def _smooth_video(rng, t, h, w):
  """Smooth random images (compress like natural frames, unlike white noise)."""
  small = rng.integers(0, 256, (t, h // 16, w // 16, 3)).astype(np.uint8)
  return np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)


def _write(root, rng):
  paths = {}
  eps = []
  for _ in range(6):
    img = _smooth_video(rng, 24, 256, 320)
    acts = {k: rng.normal(size=(24, *s)).astype(d) for k, (s, d) in testdata.ACTION_SPECS.items()}
    eps.append(testdata.fractal_episode(img, acts))
  paths["rt1"] = os.path.join(root, "fractal20220817_data", "0.1.0")
  testdata.write_fractal(paths["rt1"], eps, num_shards=2)
  paths["csgo"] = os.path.join(root, "csgo")
  for n in range(1, 5):
    acts = np.stack([csgo.encode_action(("w",), mouse_dx=rng.normal() * 50) for _ in range(40)])
    testdata.write_csgo_hdf5(os.path.join(paths["csgo"], "1-200", f"hdf5_dm_july2021_{n}.hdf5"),
                             _smooth_video(rng, 40, 150, 280 + 8)[:, :, :280], acts)
  paths["episodes"] = os.path.join(root, "episodes")
  os.makedirs(paths["episodes"])
  for e in range(6):
    episodes_lib.write_episode(os.path.join(paths["episodes"], f"ep{e}.npz"), _smooth_video(rng, 40, 256, 320),
                               rng.normal(size=(40, 7)).astype(np.float32))
  return paths


def _cfg(source, path, args):
  c = config_lib.default_data_config()
  c.source, c.path, c.clip_length, c.batch_size = source, path, 16, args.batch_size
  c.worker_count, c.num_threads = args.worker_count, args.num_threads
  if source == "embedded":
    c.resolution, c.action_dim = (64, 64), 4
  else:
    c.resolution = (320, 512)
    c.action_dim = {"rt1": 13, "csgo": 51, "episodes": 7}[source]
    c.split = "all" if source in ("rt1", "csgo") else "train"
  return c


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--batches", type=int, default=6)
  p.add_argument("--batch_size", type=int, default=4)
  p.add_argument("--worker_count", type=int, default=0)
  p.add_argument("--num_threads", type=int, default=2)
  p.add_argument("--sources", default="rt1,csgo,episodes,embedded")
  args = p.parse_args()
  rng = np.random.default_rng(0)
  root = tempfile.mkdtemp(prefix="v2w_data_bench_")
  results = {}
  try:
    paths = _write(root, rng)
    t0 = time.time()
    paths["embedded"] = simulator.embedded_dataset_dir()
    with open(os.path.join(paths["embedded"], "meta.json")) as f:
      meta = json.load(f)
    size = sum(os.path.getsize(os.path.join(paths["embedded"], x)) for x in os.listdir(paths["embedded"]))
    results["embedded_recording_s"] = meta["recording_seconds"]
    results["embedded_size_mb"] = round(size / 2**20, 2)
    results["embedded_episodes"] = len(meta["episodes"])
    results["embedded_success_rate"] = meta["policy_success_rate"]
    print(f"embedded dataset: {paths['embedded']} ({len(meta['episodes'])} episodes, {size / 2**20:.1f} MiB, "
          f"recorded in {meta['recording_seconds']:.0f} s; lookup {time.time() - t0:.1f} s)")
    for src in args.sources.split(","):
      cfg = _cfg(src, paths[src], args)
      it = pipeline.make_train_iterator(cfg, process_index=0, process_count=1)
      b = next(it)  # warm-up (index build, worker start, first reads)
      t = time.time()
      for _ in range(args.batches):
        b = next(it)
      dt = time.time() - t
      cps = args.batch_size * args.batches / dt
      results[f"{src}_clips_per_s"] = round(cps, 2)
      print(f"{src:9s} {tuple(b['frames'].shape)} actions {tuple(b['actions'].shape)}: {cps:7.2f} clips/s "
            f"({args.batches} batches of {args.batch_size}, worker_count={args.worker_count})")
  finally:
    shutil.rmtree(root, ignore_errors=True)
  results["worker_count"] = args.worker_count
  results["cpu_count"] = os.cpu_count()
  print(json.dumps(results))


if __name__ == "__main__":
  main()
