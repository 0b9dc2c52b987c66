"""Precomputed latents: the on-disk format written by ``data/encode_latents.py`` and the grain source that trains
from it (``data.source = "latents"``, ``data.path = DIR``), so the train step holds no VAE and no CLIP.

Format (one directory, one data split):
  <dir>/meta.json                         what was encoded: source, split, resolution, resize mode, model
                                          first stage / context / variant, latent and token shapes, dtype
  <dir>/shard-00003-of-00012.array_record one record per FRAME (episodes are contiguous, frames in order), a
                                          msgpack dict: "moments" [h, w, m] (VAE posterior concat(mean, logvar),
                                          unscaled; patchify: the latents), "tokens" [N, W] (frozen CLIP image
                                          tokens of this frame; resampler context only), "actions" [A] (raw)
  <dir>/shard-00003-of-00012.json         the shard's episodes [{episode_id, name, length}], written last:
                                          a shard counts as finished only when its .json exists (resume)

Frames are encoded one by one, so any window of an episode is available (the same random windows as the pixel
pipeline); a clip gets the moments of its frames and the CLIP tokens of its first frame. Augmentation acts on
pixels and cannot be applied to latents (``data.augment`` must be False). Batches:
``{"latent_moments" [B, T, h, w, m], "clip_image_tokens" [B, N, W] (resampler), "actions" [B, T, A],
"episode_id" [B]}``, float32.
"""

from __future__ import annotations

import glob
import json
import os

import grain
import numpy as np

from vid2world_jax.data import common

FORMAT_VERSION = 1
META = "meta.json"


def shard_name(k: int, n: int) -> str:
  return f"shard-{k:05d}-of-{n:05d}"


def pack_frame(moments: np.ndarray, tokens: np.ndarray | None, actions: np.ndarray) -> bytes:
  from flax import serialization  # pylint: disable=import-outside-toplevel
  rec = {"moments": np.asarray(moments), "actions": np.asarray(actions, np.float32)}
  if tokens is not None:
    rec["tokens"] = np.asarray(tokens)
  return serialization.msgpack_serialize(rec)


def unpack_frame(data: bytes) -> dict:
  from flax import serialization  # pylint: disable=import-outside-toplevel
  return serialization.msgpack_restore(data)


def read_meta(path: str) -> dict:
  fn = os.path.join(path or "", META)
  if not path or not os.path.exists(fn):
    raise common.BadDataError(f"no precomputed latents at data.path={path!r} (no {META}; write them with "
                              "python -m vid2world_jax.data.encode_latents --config=... --out=DIR)")
  with open(fn) as f:
    meta = json.load(f)
  if meta.get("format") != FORMAT_VERSION:
    raise common.BadDataError(f"{fn}: latents format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
  return meta


def finished_shards(path: str) -> dict[int, list]:
  """``{shard index: episodes}`` of the shards whose episode list (.json, written last) exists."""
  out = {}
  for fn in sorted(glob.glob(os.path.join(path, "shard-*-of-*.json"))):
    k = int(os.path.basename(fn).split("-")[1])
    if os.path.exists(fn[:-len(".json")] + ".array_record"):
      with open(fn) as f:
        out[k] = json.load(f)
  return out


def check_compatible(meta: dict, data_cfg, model_cfg) -> None:
  """One-line ValueError when the latents were encoded for another model / resolution / action dim."""
  from vid2world_jax import world_model  # pylint: disable=import-outside-toplevel
  want = {"first_stage": model_cfg.first_stage, "context": model_cfg.context,
          "resolution": [int(s) for s in data_cfg.resolution], "action_dim": int(data_cfg.action_dim)}
  if model_cfg.first_stage == "vae" or model_cfg.context == "resampler":
    want["variant"] = str(model_cfg.variant)
  if model_cfg.first_stage == "patchify":
    want.update(patch_size=int(model_cfg.patch_size), latent_scale=float(model_cfg.latent_scale))
  h, w = world_model.latent_hw(model_cfg, data_cfg.resolution)
  want["latent_shape"] = [h, w, world_model.latent_moments_channels(model_cfg)]
  want["token_shape"] = list(world_model.image_token_shape(model_cfg)) if model_cfg.context == "resampler" else None
  bad = [f"{k}={meta.get(k)!r} (config: {v!r})" for k, v in want.items() if meta.get(k) != v]
  if bad:
    raise ValueError(f"latents at {data_cfg.path} do not match the config: {', '.join(bad)}; re-encode them "
                     "with this config")


class LatentsSource:
  """Random access to the frames of the finished shards: ``episodes`` (EpisodeInfo) and ``read(i, idx)``."""

  name = "latents"

  def __init__(self, path: str, *, span: int, on_bad_data: str = "raise"):
    self.path = path
    self.meta = read_meta(path)
    shards = finished_shards(path)
    n = int(self.meta["num_shards"])
    if len(shards) < n:
      missing = sorted(set(range(n)) - set(shards))
      raise common.BadDataError(f"latents at {path}: {len(missing)} of {n} shards unfinished (e.g. "
                                f"{missing[:3]}); rerun encode_latents with the same --out to finish them")
    episodes, self._loc = [], []
    for k in sorted(shards):
      fn = os.path.join(path, shard_name(k, n) + ".array_record")
      first = 0
      for e in shards[k]:
        episodes.append(common.EpisodeInfo(episode_id=int(e["episode_id"]), name=e["name"], file=fn,
                                           length=int(e["length"])))
        self._loc.append((fn, first))
        first += int(e["length"])
    loc = {id(ep): lc for ep, lc in zip(episodes, self._loc)}
    self.episodes = common.filter_short(episodes, span, on_bad_data)
    self._loc = [loc[id(ep)] for ep in self.episodes]
    if not self.episodes:
      raise common.BadDataError(f"no usable episodes in the latents at {path}")
    self._readers = {}

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_readers"] = {}
    return state

  def read(self, i: int, frame_indices: np.ndarray) -> list[dict]:
    fn, first = self._loc[i]
    r = self._readers.get(fn)
    if r is None:
      from array_record.python import array_record_module as arm  # pylint: disable=import-outside-toplevel
      r = self._readers[fn] = arm.ArrayRecordReader(fn)
    return [unpack_frame(b) for b in r.read([first + int(j) for j in frame_indices])]


def make_source(cfg) -> LatentsSource:
  return LatentsSource(cfg.path, span=common.clip_span(cfg.clip_length, cfg.frame_stride),
                       on_bad_data=cfg.on_bad_data)


class LatentClipLoader(grain.transforms.RandomMap):
  """episode index -> clip dict of a random window (the same window law and seed use as the pixel pipeline's
  ``ClipLoader``, so the same data config picks the same windows), or None when skipped as bad data."""

  def __init__(self, source: LatentsSource, cfg):
    self.source = source
    self.clip_length, self.stride = int(cfg.clip_length), int(cfg.frame_stride)
    self.action_dim, self.on_bad_data = int(cfg.action_dim), cfg.on_bad_data

  def random_map(self, element, rng: np.random.Generator):
    ep = self.source.episodes[element]
    start = int(rng.integers(0, ep.length - common.clip_span(self.clip_length, self.stride) + 1))
    idx = start + self.stride * np.arange(self.clip_length)
    recs = self.source.read(element, idx)
    actions = np.stack([r["actions"] for r in recs]).astype(np.float32)
    if not common.validate_actions(actions, self.action_dim, f"{ep.file} episode {ep.name} frames {idx[0]}..{idx[-1]}",
                                   self.on_bad_data):
      return None
    out = {"latent_moments": np.stack([r["moments"] for r in recs]).astype(np.float32), "actions": actions,
           "episode_id": np.int32(ep.episode_id)}
    if "tokens" in recs[0]:
      out["clip_image_tokens"] = np.asarray(recs[0]["tokens"], np.float32)
    return out


def _not_none(x) -> bool:
  return x is not None


def make_train_dataset(cfg, *, process_index: int, process_count: int, source=None):
  """Infinite grain IterDataset of host-local latent batches (episodes sharded over processes)."""
  if cfg.batch_size % process_count:
    raise ValueError(f"data.batch_size {cfg.batch_size} not divisible by process_count {process_count}")
  source = make_source(cfg) if source is None else source
  mine = list(range(len(source.episodes)))[process_index::process_count]
  if not mine:
    raise ValueError(f"{len(source.episodes)} episodes cannot be sharded over {process_count} processes")
  ds = grain.MapDataset.source(mine).shuffle(seed=int(cfg.seed)).repeat(None)
  ds = ds.random_map(LatentClipLoader(source, cfg), seed=int(cfg.seed)).filter(_not_none)
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg.get("num_threads", 2)),
                                            prefetch_buffer_size=int(cfg.get("prefetch_buffer_size", 8))))
  ds = ds.batch(cfg.batch_size // process_count, drop_remainder=True)
  if cfg.worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg.worker_count)))
  return ds
