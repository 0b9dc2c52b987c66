"""Convert a folder of videos + action files into generic episodes (one .npz per episode, see episodes.py).

Input folder layout:
  <in>/<name>.<mp4|gif|avi|webm|mov|mkv>   one video per episode (read by vid2world_jax.video_io: gif with
                                            Pillow, the others with imageio-ffmpeg's ffmpeg), T frames
  <in>/<name>.npy                            float actions [T, A] (row t = action taken at frame t)
  <in>/success.json                          optional {"<name>": true/false}
Usage:
  python -m vid2world_jax.data.convert_videos --input DIR --output DIR [--resolution H W] [--on_bad_data skip]
Videos without an action file, frame/action count mismatches, unreadable videos and NaN actions raise naming the
file, or with --on_bad_data skip are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from vid2world_jax.data import common
from vid2world_jax.data import episodes as episodes_lib
from vid2world_jax import video_io
from vid2world_jax.data import video_ops

def convert_folder(in_dir: str, out_dir: str, *, resolution=None, on_bad_data: str = "raise",
                   progress: bool = True) -> list:
  """Convert every video in in_dir; returns the written episode names."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(in_dir):
    raise common.BadDataError(f"video folder not found: {in_dir!r}")
  videos = sorted(f for f in os.listdir(in_dir) if os.path.splitext(f)[1].lower() in video_io.VIDEO_EXTS)
  if not videos:
    raise common.BadDataError(f"no videos ({', '.join(video_io.VIDEO_EXTS)}) in {in_dir}")
  success = {}
  if os.path.exists(os.path.join(in_dir, "success.json")):
    with open(os.path.join(in_dir, "success.json")) as f:
      success = json.load(f)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for v in tqdm(videos, desc="converting videos", unit="video", disable=not progress):
    name = os.path.splitext(v)[0]
    vpath, apath = os.path.join(in_dir, v), os.path.join(in_dir, name + ".npy")
    if not os.path.exists(apath):
      common.bad_data(on_bad_data, "missing_actions", f"{vpath} episode {name}: no action file {apath}")
      continue
    try:
      frames = video_io.read_video(vpath)
    except Exception as e:  # noqa: BLE001
      common.bad_data(on_bad_data, "corrupt_file", f"{vpath} episode {name}: cannot read video ({e})")
      continue
    actions = np.load(apath).astype(np.float32)
    if actions.ndim == 1:
      actions = actions[:, None]
    if actions.shape[0] != frames.shape[0]:
      common.bad_data(on_bad_data, "length_mismatch",
                      f"{vpath} episode {name}: {frames.shape[0]} frames but {actions.shape[0]} action rows")
      continue
    if not common.validate_actions(actions, actions.shape[1], f"{apath} episode {name}", on_bad_data):
      continue
    if resolution is not None:
      frames = video_ops.resize_center_crop(frames, int(resolution[0]), int(resolution[1]))
    episodes_lib.write_episode(os.path.join(out_dir, name + ".npz"), frames, actions, success.get(name))
    written.append(name)
  return written


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input", required=True, help="folder of videos + <name>.npy action files")
  p.add_argument("--output", required=True, help="output folder of <name>.npz episodes")
  p.add_argument("--resolution", type=int, nargs=2, default=None, metavar=("H", "W"),
                 help="optional resize + centre-crop at conversion time (default: keep native size)")
  p.add_argument("--on_bad_data", choices=common.ON_BAD_DATA, default="raise")
  a = p.parse_args(argv)
  names = convert_folder(a.input, a.output, resolution=a.resolution, on_bad_data=a.on_bad_data)
  print(f"wrote {len(names)} episodes to {a.output}; skipped: {common.skip_counts()}")


if __name__ == "__main__":
  main()
