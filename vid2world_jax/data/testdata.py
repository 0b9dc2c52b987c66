"""Writers of small files in the REAL on-disk formats (for tests and benchmarks; no real data ships here).

* `write_fractal(dir, episodes)`: RT-1 fractal20220817_data 0.1.0 as TFDS writes it: the full feature spec
  (tfds.features.FeaturesDict with a `steps` Dataset, JPEG images), each episode serialized by TFDS's own
  example serializer into an uncompressed TFRecord shard named `fractal20220817_data-train.tfrecord-XXXXX-of-YYYYY`,
  plus features.json and dataset_info.json.
* `write_csgo_hdf5(path, frames_bgr, actions)`: one Pearce & Zhu / DIAMOND HDF5 file (flat keys frame_{i}_x/_y/
  _xaux/_helperarr, contiguous datasets).
"""

from __future__ import annotations

import json
import os

import numpy as np

from vid2world_jax.data import rt1

ACTION_SPECS = {  # key: (shape, dtype) per step
    "base_displacement_vector": ((2,), np.float32),
    "base_displacement_vertical_rotation": ((1,), np.float32),
    "gripper_closedness_action": ((1,), np.float32),
    "rotation_delta": ((3,), np.float32),
    "terminate_episode": ((3,), np.int32),
    "world_vector": ((3,), np.float32),
}
OBS_SPECS = {
    "natural_language_embedding": (512,), "base_pose_tool_reached": (7,), "gripper_closed": (1,),
    "gripper_closedness_commanded": (1,), "height_to_bottom": (1,), "orientation_box": (2, 3),
    "orientation_start": (4,), "robot_orientation_positions_box": (3, 3), "rotation_delta_to_go": (3,),
    "src_rotation": (4,), "vector_to_go": (3,), "workspace_bounds": (3, 3),
}
ATTRS = ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")


def fractal_features(image_shape=(256, 320, 3)):
  """The fractal20220817_data feature spec (data_formats.md §1.2) as a tfds FeaturesDict."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  f = tfds.features
  obs = {k: f.Tensor(shape=s, dtype=np.float32) for k, s in OBS_SPECS.items()}
  obs["image"] = f.Image(shape=image_shape, dtype=np.uint8, encoding_format="jpeg")
  obs["natural_language_instruction"] = f.Text()
  steps = f.Dataset({
      "action": f.FeaturesDict({k: f.Tensor(shape=s, dtype=d) for k, (s, d) in ACTION_SPECS.items()}),
      "is_first": f.Scalar(dtype=np.bool_), "is_last": f.Scalar(dtype=np.bool_),
      "is_terminal": f.Scalar(dtype=np.bool_), "reward": f.Scalar(dtype=np.float32),
      "observation": f.FeaturesDict(obs),
  })
  top = {"aspects": f.FeaturesDict({k: f.Scalar(dtype=np.bool_) for k in
                                    ("already_success", "feasible", "has_aspects", "success", "undesirable")}),
         "attributes": f.FeaturesDict({**{k: f.Scalar(dtype=np.int64) for k in ATTRS},
                                       **{k + "_name": f.Text() for k in ATTRS}}),
         "steps": steps}
  return f.FeaturesDict(top)


def fractal_episode(images: np.ndarray, actions: dict, instruction: str = "close middle drawer") -> dict:
  """A nested episode dict for FeaturesDict.serialize_example: images uint8 [T, 256, 320, 3], actions
  {key: [T, *shape]} for the six action keys."""
  t = images.shape[0]
  steps = []
  for i in range(t):
    obs = {k: np.zeros(s, np.float32) for k, s in OBS_SPECS.items()}
    obs.update(image=images[i], natural_language_instruction=instruction)
    steps.append({"action": {k: np.asarray(actions[k][i], d) for k, (_, d) in ACTION_SPECS.items()},
                  "is_first": i == 0, "is_last": i == t - 1, "is_terminal": i == t - 1,
                  "reward": np.float32(i == t - 1), "observation": obs})
  return {"aspects": {k: False for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")},
          "attributes": {**{k: 0 for k in ATTRS}, **{k + "_name": "" for k in ATTRS}}, "steps": steps}


def write_fractal(version_dir: str, episodes: list, num_shards: int = 1, image_shape=(256, 320, 3)) -> list:
  """Write episodes (dicts from fractal_episode, or already serialized bytes) round-robin into num_shards
  TFRecord shards + features.json + dataset_info.json. Returns the shard paths."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  os.makedirs(version_dir, exist_ok=True)
  feats = fractal_features(image_shape)
  feats.save_config(version_dir)  # features.json
  paths = [os.path.join(version_dir, f"{rt1.DATASET}-train.tfrecord-{i:05d}-of-{num_shards:05d}")
           for i in range(num_shards)]
  per_shard = [[] for _ in range(num_shards)]
  for i, ep in enumerate(episodes):
    per_shard[i % num_shards].append(ep if isinstance(ep, bytes) else feats.serialize_example(ep))
  for p, recs in zip(paths, per_shard):
    with tf.io.TFRecordWriter(p) as w:
      for r in recs:
        w.write(r)
  info = {"name": rt1.DATASET, "version": "0.1.0", "fileFormat": "tfrecord",
          "splits": [{"name": "train", "shardLengths": [str(len(r)) for r in per_shard],
                      "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}]}
  with open(os.path.join(version_dir, "dataset_info.json"), "w") as f:
    json.dump(info, f)
  return paths


def write_csgo_hdf5(path: str, frames_bgr: np.ndarray, actions: np.ndarray) -> None:
  """One DIAMOND/Pearce&Zhu HDF5 file: frames_bgr uint8 [T, 150, 280, 3] (BGR), actions [T, 51] (0/1)."""
  import h5py  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with h5py.File(path, "w") as f:
    for i in range(frames_bgr.shape[0]):
      f.create_dataset(f"frame_{i}_x", data=np.asarray(frames_bgr[i], np.uint8))
      f.create_dataset(f"frame_{i}_y", data=np.asarray(actions[i], np.float64))
      f.create_dataset(f"frame_{i}_xaux", data=np.zeros(54, np.float64))
      f.create_dataset(f"frame_{i}_helperarr", data=np.zeros(2, np.float64))
