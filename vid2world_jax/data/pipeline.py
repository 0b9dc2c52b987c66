"""The grain clip pipeline: episodes -> random windows -> resize/crop -> [-1, 1] -> (augment) -> batches.

    it = make_train_iterator(data_cfg)                       # process_index/count default to jax's
    batch = next(it)   # {"frames": f32 [B_local, T, H, W, 3] in [-1, 1], "actions": f32 [B_local, T, A] (raw,
                       #   not shifted), "episode_id": i32 [B_local]}
    state = it.get_state(); ...; it.set_state(state)         # exact resume (also via grain's orbax handler:
                                                             #   grain.checkpoint.CheckpointHandler)

Determinism: the episode order is a seeded shuffle per epoch (grain MapDataset.shuffle + repeat), the window
start and augmentation come from grain's per-element RNG (seeded by data.seed and the element index), so a seed
fixes the batch sequence for a given process_count / worker_count. Hosts get disjoint episode sets
(episodes[process_index::process_count]). Bad clips found while reading (corrupt JPEG/HDF5, NaN actions) raise a
BadDataError naming file and episode, or are skipped (filtered out) and counted when on_bad_data == "skip".

Skip counts by reason (``TrainIterator.skip_counts()``) cover the clips the trainer has CONSUMED, not those the
read threads prefetched: a skipped clip is counted inside the next good clip (``SKIP_KEY``, summed when its batch
is consumed), so the counts are the same with read threads or grain worker processes (``worker_count > 0``);
they travel in ``get_state()`` (so in the checkpoint's data state) and a resumed run reports the same totals as
an uninterrupted one. Episodes dropped when the source is indexed (short, unreadable, bad actions) are counted
separately (``index``; recomputed identically at every start).
"""

from __future__ import annotations

import dataclasses
import zlib

import grain
import numpy as np

from vid2world_jax.data import common
from vid2world_jax.data import config as config_lib
from vid2world_jax.data import video_ops


def make_source(cfg, *, split: str | None = None, progress: bool = True):
  """The source object for cfg.source / cfg.path / split (default cfg.split); validates the episodes."""
  config_lib.check_config(cfg)
  if cfg.source == "latents":
    raise ValueError("data.source=latents holds no frames (training only); evaluate on the pixel source")
  split = cfg.split if split is None else split
  span = common.clip_span(cfg.clip_length, cfg.frame_stride)
  mode = config_lib.resolved_resize_mode(cfg)
  kw = dict(split=split, action_dim=cfg.action_dim, span=span, on_bad_data=cfg.on_bad_data, resize_mode=mode)
  if cfg.source == "rt1":
    from vid2world_jax.data import rt1  # pylint: disable=import-outside-toplevel
    return rt1.Rt1Source(cfg.path, progress=progress, **kw)
  if cfg.source == "csgo":
    from vid2world_jax.data import csgo  # pylint: disable=import-outside-toplevel
    return csgo.CsgoSource(cfg.path, split_file=cfg.get("split_file") or None, **kw)
  from vid2world_jax.data import episodes  # pylint: disable=import-outside-toplevel
  path = cfg.path
  if cfg.source == "embedded" and not path:
    path = embedded_path(cfg)
  return episodes.EpisodeSource(path, **kw)


def embedded_path(cfg) -> str:
  """Directory of the embedded simulator recording named by ``cfg.embedded.env`` (recorded on first use)."""
  e = cfg.get("embedded", {})
  env = e.get("env", "breakout")
  if env == "breakout":
    from vid2world_jax.data import breakout, breakout_recording  # pylint: disable=import-outside-toplevel
    return breakout_recording.embedded_dataset_dir(episodes_per_policy=e.get("episodes_per_policy", 64),
                                         steps=e.get("steps", 40),
                                         policies=tuple(e.get("policies", breakout.RECORDED_POLICIES)),
                                         miss_hold=int(e.get("miss_hold", 6)))
  if env == "metaworld":
    from vid2world_jax.data import simulator  # pylint: disable=import-outside-toplevel
    return simulator.embedded_dataset_dir(episodes_per_policy=e.get("episodes_per_policy", 6),
                                          steps=e.get("steps", 50), resolution=e.get("resolution", 64))
  raise ValueError(f"data.embedded.env must be 'breakout' or 'metaworld', got {env!r}")


class ClipLoader(grain.transforms.RandomMap):
  """episode index (into source.episodes) -> clip dict, or None when the clip is bad and skipped."""

  def __init__(self, source, cfg):
    self.source = source
    self.clip_length = int(cfg.clip_length)
    self.stride = int(cfg.frame_stride)
    self.resolution = (int(cfg.resolution[0]), int(cfg.resolution[1]))
    self.action_dim = int(cfg.action_dim)
    self.augment = bool(cfg.augment)
    self.on_bad_data = cfg.on_bad_data
    self.mode = config_lib.resolved_resize_mode(cfg)

  def load(self, i: int, start: int, rng: np.random.Generator | None):
    """The clip dict, or None when the clip is bad and skipped (counted by ``common.bad_data``)."""
    clip = self._load(i, start, rng)
    return None if isinstance(clip, SkippedClip) else clip

  def _load(self, i: int, start: int, rng: np.random.Generator | None):
    ep = self.source.episodes[i]
    where = f"{ep.file} episode {ep.name}"
    idx = start + self.stride * np.arange(self.clip_length)
    try:
      frames, actions = self.source.read(i, idx)
    except common.BadDataError as e:
      common.bad_data(self.on_bad_data, "corrupt_file", str(e))
      return SkippedClip("corrupt_file")
    except Exception as e:  # noqa: BLE001 - corrupt file contents (HDF5/zip/protobuf errors)
      common.bad_data(self.on_bad_data, "corrupt_file", f"{where}: cannot read clip ({type(e).__name__}: {e})")
      return SkippedClip("corrupt_file")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
      common.bad_data(self.on_bad_data, "bad_shape", f"{where}: frames are {frames.dtype} {frames.shape}, "
                      "expected uint8 [T, H, W, 3]")
      return SkippedClip("bad_shape")
    actions = np.asarray(actions, np.float32)
    if not common.validate_actions(actions, self.action_dim, f"{where} frames {idx[0]}..{idx[-1]}",
                                   self.on_bad_data):
      wrong_dim = actions.ndim != 2 or actions.shape[-1] != self.action_dim
      return SkippedClip("action_dim" if wrong_dim else "nan_actions")
    x = video_ops.to_unit_range(video_ops.spatial_transform(frames, self.resolution, self.mode))
    if self.augment and rng is not None:
      x = video_ops.augment_clip(x, video_ops.sample_augment_params(rng))
    return {"frames": x, "actions": actions, "episode_id": np.int32(ep.episode_id)}

  def random_map(self, element, rng: np.random.Generator):
    ep = self.source.episodes[element]
    span = common.clip_span(self.clip_length, self.stride)
    start = int(rng.integers(0, ep.length - span + 1))
    return self._load(element, start, rng)


@dataclasses.dataclass(frozen=True)
class SkippedClip:
  """Marker of a bad clip skipped under on_bad_data="skip" (filtered out after its index is recorded)."""
  reason: str


SKIP_REASONS = ("corrupt_file", "bad_shape", "bad_dtype", "action_dim", "nan_actions", "other")
SKIP_KEY = "skipped_before"   # int32 [len(SKIP_REASONS)] per clip: clips skipped just before it, by reason


class _SkipCountIterator(grain.DatasetIterator):
  """Drops ``SkippedClip`` elements and writes their reasons into the next clip (``SKIP_KEY``): the counts travel
  inside the batches, from read threads and grain worker processes alike."""

  def __next__(self):
    counts = np.zeros(len(SKIP_REASONS), np.int32)
    while True:
      x = next(self._parent)
      if not isinstance(x, SkippedClip):
        return {**x, SKIP_KEY: counts}
      counts[SKIP_REASONS.index(x.reason if x.reason in SKIP_REASONS else "other")] += 1

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class _SkipCount(grain.IterDataset):

  def __iter__(self):
    return _SkipCountIterator(self._parent.__iter__())


class TrainIterator(grain.DatasetIterator):
  """The grain iterator of training batches plus the consumed skip counts (``skip_counts``) in its state (a
  grain ``DatasetIterator``: grain's orbax handler saves and restores it too)."""

  def __init__(self, it, index_skips: dict):
    super().__init__(it)
    self._it, self.index_skips = it, dict(index_skips)
    self._counts: dict[str, int] = {}

  def __next__(self):
    batch = next(self._it)
    skipped = batch.pop(SKIP_KEY, None) if isinstance(batch, dict) else None   # latents batches have none
    if skipped is None:
      return batch
    for reason, n in zip(SKIP_REASONS, np.asarray(skipped).reshape(-1, len(SKIP_REASONS)).sum(0)):
      if n:
        self._counts[reason] = self._counts.get(reason, 0) + int(n)
    return batch

  def skip_counts(self) -> dict:
    """``{"read": {reason: n}, "index": {reason: n}}``: clips skipped among those consumed so far (in this
    process or its grain workers), and episodes dropped when the source was indexed."""
    return {"read": dict(self._counts), "index": dict(self.index_skips)}

  def get_state(self) -> dict:
    return {"grain": self._it.get_state(), "skipped": dict(self._counts)}

  def set_state(self, state) -> None:
    if not isinstance(state, dict) or "grain" not in state:   # checkpoints written before skip counts
      self._it.set_state(state)
      return
    self._it.set_state(state["grain"])
    self._counts = {str(k): int(v) for k, v in (state.get("skipped") or {}).items()}


def _resolve_process(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return int(process_index), int(process_count)


def _ensure_absl_flags_parsed():
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags (environment notes)


def make_train_dataset(cfg, *, process_index=None, process_count=None, source=None) -> grain.IterDataset:
  """The grain IterDataset behind make_train_iterator (infinite, batched to B_local); each batch also holds
  ``SKIP_KEY``: the clips skipped before each of its clips, by reason (``TrainIterator`` sums and removes it)."""
  config_lib.check_config(cfg)
  process_index, process_count = _resolve_process(process_index, process_count)
  if cfg.source == "latents":  # precomputed VAE / CLIP outputs (data/latents.py)
    from vid2world_jax.data import latents  # pylint: disable=import-outside-toplevel
    return latents.make_train_dataset(cfg, process_index=process_index, process_count=process_count, source=source)
  if cfg.batch_size % process_count:
    raise ValueError(f"data.batch_size {cfg.batch_size} not divisible by process_count {process_count}")
  local_batch = cfg.batch_size // process_count
  source = make_source(cfg) if source is None else source
  mine = list(range(len(source.episodes)))[process_index::process_count]
  if not mine:
    raise ValueError(f"{len(source.episodes)} episodes cannot be sharded over {process_count} processes")
  ds = grain.MapDataset.source(mine).shuffle(seed=int(cfg.seed)).repeat(None)
  ds = ds.random_map(ClipLoader(source, cfg), seed=int(cfg.seed))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg.get("num_threads", 2)),
                                            prefetch_buffer_size=int(cfg.get("prefetch_buffer_size", 8))))
  ds = _SkipCount(ds)   # SkippedClip -> counted in the next clip (SKIP_KEY)
  ds = ds.batch(local_batch, drop_remainder=True)
  if cfg.worker_count > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg.worker_count)))
  return ds


def make_train_iterator(cfg, *, process_index=None, process_count=None) -> TrainIterator:
  """Checkpointable iterator of training batches (see module docstring); get_state()/set_state()/skip_counts()."""
  before = common.skip_counts()
  source = None if cfg.source == "latents" else make_source(cfg)   # latents: data/latents.py opens its shards
  index_skips = {k: v - before.get(k, 0) for k, v in common.skip_counts().items() if v - before.get(k, 0)}
  ds = make_train_dataset(cfg, process_index=process_index, process_count=process_count, source=source)
  return TrainIterator(iter(ds), index_skips)


# ----------------------------------------------------------------------------------------------------- eval
@dataclasses.dataclass(frozen=True)
class EvalClipSpec:
  episode_index: int  # into source.episodes
  episode_id: int
  name: str
  start: int


def _name_seed(name: str, seed: int, k: int = 0) -> int:
  return (zlib.crc32(name.encode("utf-8")) ^ (seed * 0x9E3779B1) ^ (k * 0x85EBCA77)) & 0xFFFFFFFF


class EvalClips:
  """Deterministic evaluation clips, loaded lazily: len(), [k] -> clip dict, batches(B), specs."""

  def __init__(self, source, cfg, specs):
    self.source, self.specs = source, list(specs)
    self._loader = ClipLoader(source, cfg)
    self._loader.augment = False

  def __len__(self):
    return len(self.specs)

  def __getitem__(self, k):
    s = self.specs[k]
    clip = self._loader.load(s.episode_index, s.start, None)
    if clip is None:
      return None
    clip["start"] = np.int32(s.start)
    return clip

  def batches(self, batch_size: int):
    """Yield batched dicts (last batch may be smaller); skipped bad clips are left out (and counted)."""
    buf = []
    for k in range(len(self)):
      c = self[k]
      if c is not None:
        buf.append(c)
      if len(buf) == batch_size:
        yield {key: np.stack([b[key] for b in buf]) for key in buf[0]}
        buf = []
    if buf:
      yield {key: np.stack([b[key] for b in buf]) for key in buf[0]}


def make_eval_clips(cfg, num_clips: int | None = None, *, split: str | None = None, seed: int | None = None,
                    source=None) -> EvalClips:
  """Deterministic evaluation clips of split (default "test").

  rt1 (spec §7.1/§8.2): a fixed subset of min(eval_episodes=1024, #hold-out) hold-out episodes chosen with
  eval_seed, one clip per episode, start index seeded by the episode name. Other sources: the split's episodes
  in a seeded order, one clip per episode (cycling over episodes with fresh start seeds if num_clips exceeds
  them), start seeded by the episode name. num_clips=None -> one per (selected) episode.
  """
  split = split or "test"
  seed = int(cfg.get("eval_seed", 0)) if seed is None else int(seed)
  source = make_source(cfg, split=split) if source is None else source
  eps = source.episodes
  span = common.clip_span(cfg.clip_length, cfg.frame_stride)
  order = np.random.default_rng(seed).permutation(len(eps))
  if cfg.source == "rt1":
    order = np.sort(order[:min(int(cfg.get("eval_episodes", 1024)), len(eps))])
  n = len(order) if num_clips is None else int(num_clips)
  specs = []
  for k in range(n):
    i = int(order[k % len(order)])
    ep = eps[i]
    start = int(np.random.default_rng(_name_seed(ep.name, seed, k // len(order))).integers(0, ep.length - span + 1))
    specs.append(EvalClipSpec(i, ep.episode_id, ep.name, start))
  return EvalClips(source, cfg, specs)
