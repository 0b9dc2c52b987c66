"""The data config block (ml_collections) shared by the trainer, evaluation and benchmarks."""

from __future__ import annotations

import ml_collections

SOURCES = ("rt1", "csgo", "episodes", "embedded", "latents")
DEFAULT_RESIZE_MODE = {"rt1": "crop", "csgo": "csgo", "episodes": "crop", "embedded": "crop",
                       "latents": "none"}  # latents: resized when they were encoded (meta.json)


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults: the embedded Meta-World dataset at 64x64 (the default CPU run). Paper settings: RT-1 / CS:GO with
  clip_length 16, resolution (320, 512), action_dim 13 / 51."""
  c = ml_collections.ConfigDict()
  c.source = "embedded"  # "rt1" | "csgo" | "episodes" | "embedded" (a simulator recording, made on first use) |
  #                       "latents" (precomputed VAE/CLIP outputs of one of them: data/encode_latents.py)
  c.path = ""  # rt1: .../fractal20220817_data/0.1.0; csgo: DIAMOND full_res dir; episodes: dir of .npz;
  #              embedded: "" = embedded_dataset_dir() (cache, $V2W_CACHE); latents: the encode_latents --out DIR
  c.clip_length = 16  # T frames per clip
  c.frame_stride = 1  # take every k-th source frame (clip spans (T-1)*k+1 source frames)
  c.resolution = (64, 64)  # (H, W) of the output frames; the paper uses (320, 512)
  c.resize_mode = ""  # "" = per-source default (rt1/episodes: "crop" resize+centre-crop; csgo: "csgo"
  #                     resize to width then centre crop/pad); or "crop" | "pad" (letterbox) | "none"
  c.action_dim = 3  # rt1 13, csgo 51, embedded Breakout 3 (one-hot), Meta-World 4; mismatches are bad data
  c.batch_size = 8  # GLOBAL batch; each of process_count hosts gets batch_size / process_count
  c.seed = 0  # shuffling, window starts and augmentation
  c.worker_count = 0  # grain worker processes (0 = in-process); >0 needs `if __name__ == "__main__":`
  c.num_threads = 2  # grain read threads per process (element loading)
  c.prefetch_buffer_size = 8  # elements prefetched by the read threads
  c.augment = False  # spec §3.3 clip-consistent augmentation (reflect-pad 2 px + crop, colour jitter)
  c.on_bad_data = "raise"  # "raise": error naming file/episode; "skip": skip and count in a log line (use
  #                          "skip" on full RT-1 to drop episodes shorter than the clip, as the paper does)
  c.split = "train"  # "train" | "test" (rt1: seeded hold-out; csgo: test_split.txt; episodes: splits.json)
  c.split_file = ""  # csgo: test file list (default <path>/test_split.txt)
  c.eval_episodes = 1024  # rt1 evaluation: fixed seeded subset of hold-out episodes (spec §7.1)
  c.eval_seed = 0  # seed of the eval subset and eval start indices ("same as AVID", seed 0)
  # Embedded dataset recording (used when source == "embedded" and path == "").
  c.embedded = ml_collections.ConfigDict()
  c.embedded.env = "breakout"  # "breakout" (MinAtar Breakout, 32x32, 3 one-hot actions; data/breakout.py) |
  #                              "metaworld" (Meta-World drawer-close, 4-dim actions; data/simulator.py)
  c.embedded.episodes_per_policy = 64  # x each recording policy (breakout: last 1/8 of each -> split 'test';
  #                                      metaworld: last one of each; use 6 there, ~2 s per episode)
  c.embedded.steps = 40  # at most this many actions per episode (breakout ends earlier on a miss; metaworld: 50)
  c.embedded.resolution = 64  # metaworld only: square frame size of the recording (breakout is 32x32)
  # breakout only: recording policies (data/breakout.py). The first five chase the ball with graded noise; the
  # exploration policies hold random actions for random runs whatever the ball does ("explore") or between runs
  # of tracking ("explore_mix"), so the data shows actions that do not follow the ball, and misses;
  # "intercept" catches the ball from every side the game allows (the trackers catch from one column behind it).
  c.embedded.policies = ("tracker", "tracker_eps0.25", "tracker_eps0.5", "tracker_eps0.75", "random",
                         "explore", "explore_mix", "intercept")
  c.embedded.miss_hold = 6  # breakout only: frames of the frozen screen kept after a missed ball (0 = cut there);
  #                            at most clip_length - 2, so that no clip is all frozen (copy-last-frame exact)
  return c


def resolved_resize_mode(cfg) -> str:
  return cfg.resize_mode or DEFAULT_RESIZE_MODE[cfg.source]


def check_config(cfg) -> None:
  """ValueError on inconsistent settings."""
  if cfg.source not in SOURCES:
    raise ValueError(f"data.source must be one of {SOURCES}, got {cfg.source!r}")
  if len(tuple(cfg.resolution)) != 2:
    raise ValueError(f"data.resolution must be (H, W), got {cfg.resolution}")
  if cfg.on_bad_data not in ("raise", "skip"):
    raise ValueError(f"data.on_bad_data must be 'raise' or 'skip', got {cfg.on_bad_data!r}")
  if cfg.batch_size < 1 or cfg.clip_length < 1 or cfg.frame_stride < 1 or cfg.action_dim < 1:
    raise ValueError("data.batch_size, clip_length, frame_stride and action_dim must be >= 1")
  if cfg.source == "latents" and cfg.augment:
    raise ValueError("data.augment acts on pixels and cannot be used with data.source=latents; set "
                     "--config.data.augment=False")
