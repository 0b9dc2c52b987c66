"""Observability: TensorBoard scalars / images, video files, tqdm progress (process 0 only), MFU, and where log
lines go (``route_logs``: the console quiet while progress bars run, INFO kept in a file in the workdir)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from vid2world_jax import pixels


CONSOLE_LEVELS = ("debug", "info", "warning", "error")
LOG_FILE = "log.txt"   # in the workdir (process 0; process i > 0 writes log.<i>.txt)


def define_console_flag():
  """``--console_log_level`` of a command line (defined when the command line asks, never at import; once)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if "console_log_level" not in flags.FLAGS:
    flags.DEFINE_enum("console_log_level", "warning", list(CONSOLE_LEVELS),
                      "lowest log level printed to the console (INFO lines go to <folder>/log.txt where the "
                      "command has a work or output folder)")


def quiet_main(main, folder=None):
  """``main(argv)`` for ``app.run`` that first routes the logs (``route_logs`` with the command line's
  ``--console_log_level``, which this defines): every command line but train's (which routes them itself) is run
  through it, so no orbax / absl INFO line reaches the console. ``folder()`` (called after flag parsing): the
  command's workdir or output folder, where INFO is kept in ``log.txt``; None (or no ``folder``): no file."""
  import functools  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  define_console_flag()

  @functools.wraps(main)
  def wrapped(argv):
    route_logs(folder() if folder else None, console_level=flags.FLAGS.console_log_level)
    return main(argv)
  return wrapped


def route_logs(workdir: str | None, *, console_level: str = "warning") -> str | None:
  """absl / orbax / python log records: on the console from ``console_level`` up (default WARNING, so the INFO
  lines of orbax and the trainer do not interleave with the progress bars; a command-line flag raises it), and
  from INFO up in ``<workdir>/log.txt`` (local workdirs; None for a remote one). Returns the log file's path."""
  import logging as std_logging  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  if console_level not in CONSOLE_LEVELS:
    raise ValueError(f"console log level must be one of {CONSOLE_LEVELS}, got {console_level!r}")
  root = std_logging.getLogger()
  absl_logging.use_absl_handler()
  for h in root.handlers:   # the console handlers (absl's, any stderr stream); files keep their levels
    if not isinstance(h, std_logging.FileHandler):
      h.setLevel(getattr(std_logging, console_level.upper()))
  if absl_logging.get_verbosity() < absl_logging.INFO:
    absl_logging.set_verbosity(absl_logging.INFO)   # INFO records are made (for the file)
  if not workdir or "://" in str(workdir):
    return None
  os.makedirs(workdir, exist_ok=True)
  name = LOG_FILE if jax.process_index() == 0 else f"log.{jax.process_index()}.txt"
  path = os.path.abspath(os.path.join(workdir, name))
  if not any(isinstance(h, std_logging.FileHandler) and h.baseFilename == path for h in root.handlers):
    fh = std_logging.FileHandler(path)
    fh.setLevel(std_logging.INFO)
    fh.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] "
                                          "%(message)s"))
    root.addHandler(fh)
  return path


class MetricWriter:
  """TensorBoard (tensorboardX) + ``metrics.jsonl`` in ``workdir``; a no-op on processes other than 0."""

  def __init__(self, workdir: str, *, enabled: bool | None = None):
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self.workdir = workdir
    self._tb = None
    self._jsonl = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def scalars(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in values.items()}
    for k, v in clean.items():
      self._tb.add_scalar(k, v, step)
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()

  def text(self, tag: str, text: str, step: int = 0) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, step)

  def video(self, step: int, tag: str, frames: np.ndarray, fps: int = 4) -> str | None:
    """``frames [N, T, H, W, 3]`` in [-1, 1] -> ``<workdir>/samples/<tag>_<step>.gif`` (one row of N clips) and
    a TensorBoard image strip (first clip, frames side by side). Returns the gif path."""
    if not self.enabled:
      return None
    from vid2world_jax import video_io
    x = pixels.to_uint8(np.asarray(frames, np.float32))   # rounded (it truncated before)
    n, t, h, w, c = x.shape
    row = np.concatenate(list(x), axis=2)   # [T, H, N*W, 3]: the N clips side by side
    path = os.path.join(self.workdir, "samples", f"{tag}_{step:08d}.gif")
    video_io.write_video(path, row, fps=fps)
    strip = np.concatenate(list(x[0]), axis=1)  # [H, T*W, 3]
    self._tb.add_image(tag, strip, step, dataformats="HWC")
    return path

  def flush(self) -> None:
    if self.enabled:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


class Progress:
  """tqdm bar with loss, steps/s and frames/s (process 0 only)."""

  def __init__(self, start: int, total: int, *, enabled: bool):
    self.bar = None
    if enabled and jax.process_index() == 0:
      from tqdm import tqdm
      self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

  def update(self, n: int, **postfix) -> None:
    if self.bar is not None:
      self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                           refresh=False)
      self.bar.update(n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


# Dense peak FLOP/s per device (bf16), for the MFU estimate. Unknown kinds (CPU) -> None unless configured.
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


def peak_flops_per_device(configured: float = 0.0) -> float | None:
  if configured and configured > 0:
    return float(configured)
  kind = jax.devices()[0].device_kind
  for k, v in PEAK_FLOPS.items():
    if kind.startswith(k):
      return v
  return None


def compiled_flops(compiled) -> float | None:
  """FLOPs of one execution of a compiled (per-device, partitioned) executable, from XLA's cost analysis."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else {}
  f = (ca or {}).get("flops")
  return float(f) if f else None
