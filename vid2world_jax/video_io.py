"""Reading and writing video files: one function to read, one to write, used by every tool of the project.

* mp4 / webm / avi / mov / mkv go through ``imageio-ffmpeg`` (its wheel ships an ffmpeg binary, so nothing has
  to be installed on the system). mp4 is written as H.264 (libx264, CRF ``quality``), pixel format yuv420p when
  height and width are even (plays everywhere, browsers included) and yuv444p otherwise (odd sizes keep their
  exact shape instead of being padded). Lossy: a round trip is close, not equal (tests assert the PSNR).
* gif is written by ffmpeg with one palette for the whole clip (palettegen/paletteuse, no dithering), so every
  frame is kept (Pillow's writer merges identical consecutive frames, which changes the frame count) and a
  clip with at most 256 colours round-trips to within 1 per channel. It is read with Pillow (each frame
  composited to full RGB).

Frames are uint8 RGB ``[T, H, W, 3]`` on both sides.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np

from vid2world_jax.user_input import UserInputError

FFMPEG_EXTS = (".mp4", ".webm", ".avi", ".mov", ".mkv")
VIDEO_EXTS = FFMPEG_EXTS + (".gif",)
WRITE_EXTS = (".mp4", ".gif")
# One palette for the whole clip, computed from all frames, applied without dithering.
_GIF_FILTER = ("split[a][b];[a]palettegen=max_colors=256:reserve_transparent=0:stats_mode=full[p];"
               "[b][p]paletteuse=dither=none")


def _ext(path: str) -> str:
  return os.path.splitext(str(path))[1].lower()


def read_video(path: str) -> np.ndarray:
  """All frames of the video at ``path`` as uint8 ``[T, H, W, 3]`` RGB."""
  path = str(path)
  ext = _ext(path)
  if ext not in VIDEO_EXTS:
    raise UserInputError(f"{path}: unsupported video type {ext!r} (supported: {', '.join(VIDEO_EXTS)})")
  if not os.path.exists(path):
    raise FileNotFoundError(f"video not found: {path}")
  try:
    frames = _decode(path, ext)
  except (OSError, RuntimeError, ValueError, EOFError, SyntaxError, MemoryError, StopIteration) as e:
    raise UserInputError(f"{path}: not a readable video ({type(e).__name__}: {_last_line(e)})") from None
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise UserInputError(f"{path}: expected RGB frames [T, H, W, 3], got shape {frames.shape}")
  return np.ascontiguousarray(frames, dtype=np.uint8)


def _last_line(e: BaseException) -> str:
  lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
  return lines[-1] if lines else "no details"


@contextlib.contextmanager
def _spawning_ffmpeg():
  """Silence JAX's fork warning while subprocess starts ffmpeg: the child execs at once (C-level fork + exec, no
  Python runs in it), which is the case the warning does not apply to."""
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    yield


def _decode(path: str, ext: str) -> np.ndarray:
  if ext == ".gif":
    import imageio.v3 as iio  # pylint: disable=import-outside-toplevel
    frames = np.asarray(iio.imread(path, plugin="pillow", index=None, mode="RGB"))
    if frames.ndim == 3:  # a one-frame gif
      frames = frames[None]
  else:
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    with _spawning_ffmpeg():
      meta = next(reader)  # starts ffmpeg
    w, h = meta["size"]
    chunks = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]
    if not chunks:
      raise ValueError("no video frames")
    frames = np.stack(chunks)
  return frames


def write_video(path: str, frames: np.ndarray, fps: float = 8.0, *, quality: int = 17) -> str:
  """Write uint8 ``[T, H, W, 3]`` RGB ``frames`` to ``path`` (.mp4 or .gif); returns ``path``.

  ``quality`` is the H.264 CRF for mp4 (0 = lossless, 17 ~ visually lossless, 23 = ffmpeg's default).
  """
  path = str(path)
  ext = _ext(path)
  if ext not in WRITE_EXTS:
    raise ValueError(f"{path}: can only write {' or '.join(WRITE_EXTS)}, got {ext!r}")
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
    raise ValueError(f"{path}: frames must be non-empty RGB [T, H, W, 3], got shape {frames.shape}")
  if frames.dtype != np.uint8:
    raise ValueError(f"{path}: frames must be uint8, got {frames.dtype}")
  if not fps > 0:
    raise ValueError(f"{path}: fps must be positive, got {fps}")
  import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
  _, h, w, _ = frames.shape
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  if ext == ".gif":
    writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="gif", pix_fmt_out="pal8", quality=None,
                                         macro_block_size=1, ffmpeg_log_level="error",
                                         output_params=["-filter_complex", _GIF_FILTER, "-loop", "0"])
  else:
    pix_fmt = "yuv420p" if h % 2 == 0 and w % 2 == 0 else "yuv444p"
    writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264", pix_fmt_out=pix_fmt,
                                         quality=None, macro_block_size=1, ffmpeg_log_level="error",
                                         output_params=["-crf", str(int(quality)), "-movflags", "+faststart"])
  with _spawning_ffmpeg():
    writer.send(None)  # start ffmpeg
  try:
    for f in frames:
      writer.send(np.ascontiguousarray(f))
  finally:
    writer.close()
  return path
