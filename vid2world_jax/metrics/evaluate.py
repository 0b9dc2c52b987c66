"""Video-prediction metrics: ``python -m vid2world_jax.evaluate --pred P --gt G --protocol rt1`` (this module; the
top-level ``evaluate`` is the shim that keeps the command line).

Inputs: ``--pred`` / ``--gt`` are ``.npz`` files holding ``videos`` uint8 ``[N, T, H, W, 3]``, or folders of such
files (concatenated in sorted file-name order). Video ``i`` of ``--pred`` is scored against video ``i`` of ``--gt``.

Metrics (paper §8 / Appendix C protocol, see ``vid2world_jax.metrics.protocol``):
* ``psnr``, ``ssim`` (11x11 Gaussian, sigma 1.5): per frame, averaged over all scored frames of all videos.
* ``lpips``: per frame (VGG for rt1/csgo, ``--lpips_net`` to override), averaged the same way.
* ``fid``: Fréchet distance of FID-Inception pool3 features, every scored frame an independent image.
* ``fvd``: Fréchet distance of I3D logits of the scored clips (224x224, StyleGAN-V preprocessing).

Weights are never downloaded: ``--lpips_weights`` (torchvision vgg16/alexnet state dict; the linear heads come from
the installed ``lpips`` package or ``--lpips_lin_weights``), ``--inception_weights`` (pytorch-fid's
``pt_inception-2015-12-05-*.pth``), ``--i3d_weights`` (I3D state dict ``.pt``). When ``--metrics`` is left at its
default, a metric whose weights are missing is skipped with a one-line message; when ``--metrics`` names it
explicitly, a missing file is an error. Prints a table and writes JSON (``--output_json``).
"""

from __future__ import annotations

import glob
import json
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from vid2world_jax import pixels
from vid2world_jax.metrics import frechet, i3d as i3d_lib, image_metrics, inception as inception_lib, protocol
from vid2world_jax.metrics import weights
from vid2world_jax import user_input

ALL_METRICS = ("psnr", "ssim", "lpips", "fid", "fvd")
NEEDS_WEIGHTS = {"lpips": "lpips_weights", "fid": "inception_weights", "fvd": "i3d_weights"}

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined by ``run``, never at import)."""
  flags.DEFINE_string("pred", None, "predicted videos: .npz with `videos` uint8 [N,T,H,W,3], or a folder of them")
  flags.DEFINE_string("gt", None, "ground-truth videos, same format and order as --pred")
  flags.DEFINE_enum("protocol", "generic", ["rt1", "csgo", "generic"], "frame selection / crop / resize protocol")
  flags.DEFINE_list("metrics", list(ALL_METRICS), "metrics to compute (subset of psnr,ssim,lpips,fid,fvd)")
  flags.DEFINE_string("lpips_weights", None, "torchvision vgg16/alexnet state dict (or a full lpips.LPIPS state dict)")
  flags.DEFINE_string("lpips_lin_weights", None, "lpips linear heads (default: weights/v0.1/<net>.pth of the lpips "
                      "package)")
  flags.DEFINE_enum("lpips_net", None, ["vgg", "alex"], "LPIPS backbone (default: the protocol's, VGG)")
  flags.DEFINE_string("inception_weights", None, "pytorch-fid pt_inception-2015-12-05-*.pth")
  flags.DEFINE_string("i3d_weights", None, "I3D (InceptionI3d) state dict .pt")
  flags.DEFINE_string("output_json", "metrics.json", "where to write the results as JSON ('' to skip)")
  flags.DEFINE_integer("batch_size", 16, "frames (images) or clips (FVD) per network call")
  flags.DEFINE_integer("fid_size", 299, "Inception input size; 299 is the standard (others: debugging only)")
  flags.DEFINE_integer("fvd_size", 224, "I3D input size; 224 is the standard (others: debugging only)")


def load_videos(path: str) -> np.ndarray:
  """uint8 ``[N, T, H, W, 3]`` from an ``.npz`` (key ``videos``) or a folder of them."""
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, "*.npz")))
    if not files:
      raise ValueError(f"no .npz files in folder {path}")
  elif os.path.isfile(path):
    files = [path]
  else:
    raise FileNotFoundError(f"videos not found: {path}")
  out = []
  for f in files:
    _, v = user_input.load_npz(f, ("videos",), "videos")
    if v.ndim != 5 or v.shape[-1] != 3 or v.dtype != np.uint8:
      raise ValueError(f"{f}: 'videos' must be uint8 [N, T, H, W, 3], got {v.dtype} {v.shape}")
    out.append(v)
  try:
    return np.concatenate(out, 0)
  except ValueError as e:
    raise ValueError(f"videos in {path} have different shapes: {[v.shape for v in out]}") from e


def _batched(fn, x: np.ndarray, batch: int) -> np.ndarray:
  """Applies ``fn`` to fixed-size batches (the last one zero-padded: one compilation) and concatenates."""
  outs = []
  for i in range(0, len(x), batch):
    chunk = x[i:i + batch]
    n = len(chunk)
    if n < batch:
      chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)], 0)
    outs.append(np.asarray(fn(jnp.asarray(chunk)))[:n])
  return np.concatenate(outs, 0)


def _jit_model(model, prep=None):
  graphdef, state = nnx.split(model)

  @jax.jit
  def f(state, x):
    x = prep(x) if prep is not None else x
    return nnx.merge(graphdef, state)(x)

  return lambda x: f(state, x)


def _jit_pair_model(model):
  graphdef, state = nnx.split(model)

  @jax.jit
  def f(state, xy):
    x, y = pixels.from_uint8(xy[:, 0]), pixels.from_uint8(xy[:, 1])
    return nnx.merge(graphdef, state)(x, y)

  return lambda xy: f(state, xy)


def evaluate(pred: np.ndarray, gt: np.ndarray, *, protocol_name: str = "generic", metrics=ALL_METRICS,
             lpips_weights=None, lpips_lin_weights=None, lpips_net=None, inception_weights=None, i3d_weights=None,
             explicit: bool = True, batch_size: int = 16, fid_size: int = 299, fvd_size: int = 224,
             log=print) -> dict:
  """Scores uint8 ``[N, T, H, W, 3]`` predictions against ground truth. Returns a JSON-able dict.

  ``explicit``: the caller named ``metrics`` itself, so a missing weight file raises
  :class:`weights.MissingWeightsError`; otherwise that metric is skipped with a one-line message.
  """
  unknown = [m for m in metrics if m not in ALL_METRICS]
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {','.join(ALL_METRICS)}")
  if pred.shape != gt.shape:
    raise ValueError(f"--pred videos {pred.shape} and --gt videos {gt.shape} differ in shape")
  cfg = protocol.get_protocol(protocol_name)
  p, g = protocol.apply(pred, cfg), protocol.apply(gt, cfg)
  n, t = p.shape[:2]
  frames_p, frames_g = p.reshape(n * t, *p.shape[2:]), g.reshape(n * t, *g.shape[2:])
  result = {"protocol": protocol_name, "num_videos": int(n), "frames_scored": int(t),
            "resolution": list(p.shape[2:4]), "metrics": {}, "skipped": {}}

  def skip_or_raise(name, err):
    if explicit:
      raise err
    msg = str(err).splitlines()[0]
    log(f"skipping {name}: {msg}")
    result["skipped"][name] = msg

  if "psnr" in metrics or "ssim" in metrics:
    both = np.stack([frames_p, frames_g], 1)

    @jax.jit
    def ps(xy):
      x, y = xy[:, 0].astype(jnp.float32) / 255.0, xy[:, 1].astype(jnp.float32) / 255.0
      return jnp.stack([image_metrics.psnr(x, y), image_metrics.ssim(x, y)], -1)

    vals = _batched(ps, both, batch_size).astype(np.float64)
    if "psnr" in metrics:
      finite = np.isfinite(vals[:, 0])
      if not finite.all():
        log(f"psnr: {int((~finite).sum())} identical frame pairs (infinite PSNR) left out of the mean")
      result["metrics"]["psnr"] = float(vals[finite, 0].mean()) if finite.any() else float("inf")
    if "ssim" in metrics:
      result["metrics"]["ssim"] = float(vals[:, 1].mean())

  if "lpips" in metrics:
    net = lpips_net or cfg.lpips_net
    try:
      model = weights.load_lpips(net, lpips_weights, lpips_lin_weights)
    except weights.MissingWeightsError as e:
      skip_or_raise("lpips", e)
    else:
      vals = _batched(_jit_pair_model(model), np.stack([frames_p, frames_g], 1), batch_size)
      result["metrics"]["lpips"] = float(vals.astype(np.float64).mean())
      result["lpips_net"] = net

  if "fid" in metrics:
    try:
      icfg = inception_lib.config()
      icfg.input_size = fid_size
      model = weights.load_inception(inception_weights, icfg)
    except weights.MissingWeightsError as e:
      skip_or_raise("fid", e)
    else:
      f = _jit_model(model, prep=lambda x: x.astype(jnp.float32) / 255.0)
      fp, fg = _batched(f, frames_p, batch_size), _batched(f, frames_g, batch_size)
      result["metrics"]["fid"] = frechet.frechet_distance_from_features(fp, fg)

  if "fvd" in metrics:
    try:
      vcfg = i3d_lib.config()
      k = math.ceil(fvd_size / 32)
      vcfg.avg_pool_kernel = (2, k, k)
      model = weights.load_i3d(i3d_weights, vcfg)
    except weights.MissingWeightsError as e:
      skip_or_raise("fvd", e)
    else:
      if n < 2:
        raise ValueError("fvd needs at least 2 videos per set")
      f = _jit_model(model, prep=lambda x: i3d_lib.preprocess(x, fvd_size))
      fp, fg = _batched(f, p, batch_size), _batched(f, g, batch_size)
      result["metrics"]["fvd"] = frechet.frechet_distance_from_features(fp, fg)
  return result


def format_table(result: dict) -> str:
  lines = [f"protocol {result['protocol']}: {result['num_videos']} videos x {result['frames_scored']} frames "
           f"at {result['resolution'][0]}x{result['resolution'][1]}", f"{'metric':<8} {'value':>12}"]
  for k in ALL_METRICS:
    if k in result["metrics"]:
      lines.append(f"{k:<8} {result['metrics'][k]:>12.4f}")
  for k, why in result["skipped"].items():
    lines.append(f"{k:<8} {'skipped':>12}  ({why})")
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.pred or not FLAGS.gt:
    raise app.UsageError("--pred and --gt are required")
  metrics = [m.strip().lower() for m in FLAGS.metrics if m.strip()]
  try:
    result = evaluate(load_videos(FLAGS.pred), load_videos(FLAGS.gt), protocol_name=FLAGS.protocol,
                      metrics=metrics, lpips_weights=FLAGS.lpips_weights, lpips_lin_weights=FLAGS.lpips_lin_weights,
                      lpips_net=FLAGS.lpips_net, inception_weights=FLAGS.inception_weights,
                      i3d_weights=FLAGS.i3d_weights, explicit=FLAGS["metrics"].present,
                      batch_size=FLAGS.batch_size, fid_size=FLAGS.fid_size, fvd_size=FLAGS.fvd_size)
  except (weights.MissingWeightsError, FileNotFoundError, ValueError) as e:
    print(f"error: {user_input.one_line(e)}", file=sys.stderr)
    return 1
  print(format_table(result))
  if FLAGS.output_json:
    with user_input.atomic_output(FLAGS.output_json) as tmp, open(tmp, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {FLAGS.output_json}")
  return 0


def run():
  """The command line (``python -m vid2world_jax.evaluate``)."""
  from vid2world_jax import host_memory  # pylint: disable=import-outside-toplevel
  host_memory.reexec_with_huge_pages()   # first: restarts once with glibc.malloc.hugetlb=1 where it helps
  define_flags()
  from vid2world_jax import logging_utils  # pylint: disable=import-outside-toplevel
  app.run(logging_utils.quiet_main(lambda argv: sys.exit(main(argv))), flags_parser=user_input.parse_flags)


if __name__ == "__main__":
  run()
