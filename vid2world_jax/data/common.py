"""Shared pieces of the data sources: episode records, bad-data policy, the source interface.

A *source* is a picklable object with
  * `episodes: list[EpisodeInfo]`  (the episodes of the requested split, validated at construction), and
  * `read(i, frame_indices) -> (frames uint8 [T, h, w, 3] RGB, actions float32 [T, A])` for episode `i`,
  * `resize_mode` (one of video_ops.RESIZE_MODES) and `name`.
File handles are opened lazily and dropped on pickling, so sources travel to grain worker processes.

Bad data (missing directory, short episode, corrupt file, wrong action dim, NaN actions) either raises a
`BadDataError` naming the file and episode, or, with `on_bad_data="skip"`, is skipped and counted in a log line.
A missing directory / empty dataset always raises (there is nothing to skip to).
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np
from absl import logging

from vid2world_jax.user_input import UserInputError

ON_BAD_DATA = ("raise", "skip")


class BadDataError(UserInputError):
  """Bad input data; the message (one line) names the file and the episode (a user error: CLIs print it in one
  line, see user_input.user_errors)."""

  def __init__(self, message: str = ""):
    super().__init__(message)


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
  episode_id: int  # stable integer id within the source (index in the full, unsplit episode list)
  name: str  # human-readable name used in error messages and for seeding eval start indices
  file: str  # file that holds the episode
  length: int  # number of frames


_SKIPS = collections.Counter()
_SKIPS_LOCK = threading.Lock()


def skip_counts() -> dict:
  """Counts of skipped bad data in THIS process, by reason (grain workers keep their own counts)."""
  with _SKIPS_LOCK:
    return dict(_SKIPS)


def reset_skip_counts() -> None:
  with _SKIPS_LOCK:
    _SKIPS.clear()


def bad_data(on_bad_data: str, reason: str, message: str) -> None:
  """Raise BadDataError(message) or (on_bad_data == "skip") count it and log one warning line."""
  if on_bad_data not in ON_BAD_DATA:
    raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}, got {on_bad_data!r}")
  if on_bad_data == "raise":
    raise BadDataError(message)
  with _SKIPS_LOCK:
    _SKIPS[reason] += 1
    total = sum(_SKIPS.values())
  logging.warning("data: skipped (%s): %s [skipped so far: %s = %d]", reason, message, dict(_SKIPS), total)


def clip_span(clip_length: int, frame_stride: int) -> int:
  """Number of consecutive source frames a clip covers."""
  if clip_length < 1 or frame_stride < 1:
    raise ValueError(f"clip_length and frame_stride must be >= 1, got {clip_length}, {frame_stride}")
  return (clip_length - 1) * frame_stride + 1


def validate_actions(actions: np.ndarray, action_dim: int, where: str, on_bad_data: str) -> bool:
  """True if `actions` is a finite [T, action_dim] array; else raise / count (returns False when skipped)."""
  if actions.ndim != 2 or actions.shape[1] != action_dim:
    bad_data(on_bad_data, "action_dim", f"{where}: actions have shape {actions.shape}, config action_dim={action_dim}")
    return False
  if not (np.issubdtype(actions.dtype, np.integer) or np.issubdtype(actions.dtype, np.floating)
          or actions.dtype == np.bool_):
    bad_data(on_bad_data, "bad_dtype", f"{where}: actions have dtype {actions.dtype}, expected real numbers")
    return False
  with np.errstate(over="ignore"):
    finite = np.isfinite(actions.astype(np.float32))   # float64 values beyond float32 become inf when read
  if not np.all(finite):
    n = int(np.sum(~finite))
    bad_data(on_bad_data, "nan_actions", f"{where}: {n} non-finite (NaN/inf) action values")
    return False
  return True


def filter_short(episodes, span: int, on_bad_data: str) -> list:
  """Drop (after raise/count) episodes with fewer than `span` frames.

  With on_bad_data="raise" the first short episode raises. With "skip" every short episode is counted, and one
  warning line per call names how many were dropped and the first of them (a long-horizon split over a recording
  of short games can drop dozens; one line each would bury the console).
  """
  kept, short = [], []
  for ep in episodes:
    if ep.length >= span:
      kept.append(ep)
      continue
    message = f"{ep.file} episode {ep.name}: {ep.length} frames < clip span {span}"
    if on_bad_data != "skip":
      bad_data(on_bad_data, "short_episode", message)
    short.append(message)
  if short:
    with _SKIPS_LOCK:
      _SKIPS["short_episode"] += len(short)
      counts = dict(_SKIPS)
    logging.warning("data: skipped (short_episode): %d episode(s) shorter than the clip span %d, first: %s "
                    "[skipped so far: %s = %d]", len(short), span, short[0], counts, sum(counts.values()))
  return kept
