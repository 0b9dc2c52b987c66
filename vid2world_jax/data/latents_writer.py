"""Encodes a dataset once with the frozen VAE (+ CLIP image encoder) into the precomputed-latents format of
``data/latents.py``: ArrayRecord shards, a progress bar over episodes, resume by skipping finished shards.

  encode_dataset(cfg, out_dir, frozen_graphdef, frozen_state)   # cfg: a training config (data + model blocks)

Frames are read and resized exactly as the pixel pipeline does (``data.augment`` is not applied: augmentation
is per clip, on pixels), converted to [-1, 1], and encoded ``batch_frames`` at a time by one jitted function.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vid2world_jax import world_model
from vid2world_jax.data import common
from vid2world_jax.data import config as config_lib
from vid2world_jax.data import latents
from vid2world_jax.data import video_ops

STORE_DTYPES = ("float32", "float16")


def frozen_stage(cfg, *, allow_random: bool = False):
  """``(graphdef, state)`` of the FrozenStage: weights from ``cfg.init_from`` (a converted checkpoint), or,
  only with ``allow_random`` (tests, benchmarks), random weights from ``cfg.seed``."""
  if cfg.model.first_stage != "vae" and cfg.model.context != "resampler":
    raise ValueError("model.first_stage=patchify with the learned null context has no frozen encoder: train "
                     "from frames (patchify is exact and cheap)")
  init = cfg.get("init_from", "")
  if not init or init == "scratch":
    if not allow_random:
      raise ValueError("encoding latents needs the frozen VAE / CLIP weights: set --config.init_from=<converted "
                       "checkpoint dir> (or --allow_random_encoders for a test run)")
  fs = world_model.FrozenStage(cfg.model, rngs=nnx.Rngs(params=int(cfg.seed)))
  graphdef, state = nnx.split(fs)
  if init and init != "scratch":
    from vid2world_jax.conversion import init_from  # pylint: disable=import-outside-toplevel
    from vid2world_jax import sharding  # pylint: disable=import-outside-toplevel
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1}, devices=jax.devices()[:1])
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    state = jax.device_put(state, shardings)
    _, state = init_from.load(cfg, cfg.model, None, state, None, shardings)
  return graphdef, state


def make_meta(cfg, dtype: str, num_shards: int, episodes_per_shard: int) -> dict:
  m, d = cfg.model, cfg.data
  h, w = world_model.latent_hw(m, d.resolution)
  meta = {"format": latents.FORMAT_VERSION, "source": d.source, "source_path": d.path, "split": d.split,
          "resolution": [int(s) for s in d.resolution], "resize_mode": config_lib.resolved_resize_mode(d),
          "action_dim": int(d.action_dim), "first_stage": m.first_stage, "context": m.context,
          "latent_shape": [h, w, world_model.latent_moments_channels(m)],
          "token_shape": list(world_model.image_token_shape(m)) if m.context == "resampler" else None,
          "dtype": dtype, "num_shards": num_shards, "episodes_per_shard": episodes_per_shard,
          "init_from": cfg.get("init_from", "")}
  if m.first_stage == "vae" or m.context == "resampler":
    meta["variant"] = str(m.variant)
  if m.first_stage == "patchify":
    meta.update(patch_size=int(m.patch_size), latent_scale=float(m.latent_scale))
  return meta


def _encode_fn(graphdef, want_tokens: bool):
  @jax.jit
  def encode(state, frames):  # frames [n, H, W, 3] in [-1, 1]
    fs = nnx.merge(graphdef, state)
    moments = fs.encode_moments(frames[None])[0]
    tokens = fs.image_tokens(frames) if want_tokens else None
    return moments, tokens
  return encode


def _write_json(path: str, obj) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(path + ".tmp", path)


def encode_dataset(cfg, out_dir: str, graphdef, state, *, episodes_per_shard: int = 64, batch_frames: int = 16,
                   dtype: str = "float32", progress: bool = True, source=None) -> dict:
  """Writes (or finishes) the latents of ``cfg.data`` (its split) to ``out_dir``; returns
  ``{"episodes", "frames", "shards_written", "shards_skipped"}``."""
  from vid2world_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  d = cfg.data
  if d.source == "latents":
    raise ValueError("data.source is already 'latents': point the config at the pixel source to encode")
  if dtype not in STORE_DTYPES:
    raise ValueError(f"dtype must be one of {STORE_DTYPES}, got {dtype!r}")
  if episodes_per_shard < 1 or batch_frames < 1:
    raise ValueError("episodes_per_shard and batch_frames must be >= 1")
  source = pipeline.make_source(d) if source is None else source
  eps = source.episodes
  n_shards = max(1, math.ceil(len(eps) / episodes_per_shard))
  meta = make_meta(cfg, dtype, n_shards, episodes_per_shard)
  os.makedirs(out_dir, exist_ok=True)
  meta_path = os.path.join(out_dir, latents.META)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    if old != meta:
      diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
      raise ValueError(f"{out_dir} holds latents written with other settings ({', '.join(diff)}): use a new --out")
  else:
    _write_json(meta_path, meta)

  want_tokens = cfg.model.context == "resampler"
  encode = _encode_fn(graphdef, want_tokens)
  mode = config_lib.resolved_resize_mode(d)
  res = (int(d.resolution[0]), int(d.resolution[1]))
  done = latents.finished_shards(out_dir)
  todo = [k for k in range(n_shards) if k not in done]
  skipped_eps = sum(len(done[k]) for k in done if k < n_shards)
  stats = {"episodes": 0, "frames": 0, "shards_written": 0, "shards_skipped": n_shards - len(todo)}
  from array_record.python import array_record_module as arm  # pylint: disable=import-outside-toplevel
  with tqdm(total=len(eps), initial=min(skipped_eps, len(eps)), desc="encode latents", unit="episode",
            disable=not progress) as bar:
    for k in todo:
      base = os.path.join(out_dir, latents.shard_name(k, n_shards))
      writer = arm.ArrayRecordWriter(base + ".array_record.tmp", "group_size:1")
      listing = []
      for i in range(k * episodes_per_shard, min(len(eps), (k + 1) * episodes_per_shard)):
        ep = eps[i]
        n = _encode_episode(source, i, ep, encode, state, writer, res, mode, batch_frames, dtype, want_tokens,
                            d.on_bad_data)
        if n:
          listing.append({"episode_id": int(ep.episode_id), "name": ep.name, "length": n})
          stats["episodes"] += 1
          stats["frames"] += n
        bar.update(1)
      writer.close()
      os.replace(base + ".array_record.tmp", base + ".array_record")
      _write_json(base + ".json", listing)   # last: marks the shard finished
      stats["shards_written"] += 1
  return stats


def _encode_episode(source, i, ep, encode, state, writer, res, mode, batch_frames, dtype, want_tokens,
                    on_bad_data) -> int:
  """Encodes and writes every frame of episode ``i``; returns the number of frames (0 when skipped)."""
  records = []
  for s in range(0, ep.length, batch_frames):
    idx = np.arange(s, min(ep.length, s + batch_frames))
    try:
      frames, actions = source.read(i, idx)
    except Exception as e:  # noqa: BLE001 - corrupt file contents, reported like the pixel pipeline does
      common.bad_data(on_bad_data, "corrupt_file", f"{ep.file} episode {ep.name}: cannot read frames "
                      f"({type(e).__name__}: {e})")
      return 0
    x = video_ops.to_unit_range(video_ops.spatial_transform(frames, res, mode))
    n = len(idx)
    if n < batch_frames:  # pad to one compiled shape
      x = np.concatenate([x, np.repeat(x[-1:], batch_frames - n, axis=0)])
    moments, tokens = jax.device_get(encode(state, jnp.asarray(x)))
    for j in range(n):
      records.append(latents.pack_frame(moments[j].astype(dtype),
                                        tokens[j].astype(dtype) if want_tokens else None,
                                        np.asarray(actions[j], np.float32)))
  for r in records:
    writer.write(r)
  return len(records)
