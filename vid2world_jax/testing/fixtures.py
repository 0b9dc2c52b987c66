"""Discovery and loading of the PyTorch reference fixtures (format: ``shared/fixtures/README.md``).

Fixture folders are found under ``<repo>/../shared/fixtures`` (or ``$V2W_SHARED/fixtures``), the repository's
own ``tests/fixtures`` (Vid2World, made by ``tools/vid2world_reference.py``) and every extra path of
``$V2W_FIXTURES`` (colon-separated). A folder is a fixture if it holds ``config.json``, ``weights.safetensors`` and
``io.npz``. Tests dispatch on ``config.json``'s ``kind`` and never hard-code names or shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SHARED = os.path.join(os.path.dirname(REPO_ROOT), "shared")


def shared_dir() -> str:
  """``$V2W_SHARED`` or ``<repo>/../shared``."""
  return os.environ.get("V2W_SHARED", DEFAULT_SHARED)


REPO_FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")  # the repository's own fixtures (Vid2World)


def fixture_roots() -> list[str]:
  """``shared/fixtures``, the repository's ``tests/fixtures`` and every path of ``$V2W_FIXTURES``."""
  env = os.environ.get("V2W_FIXTURES")
  extra = [p for p in env.split(os.pathsep) if p] if env else []
  roots = [os.path.join(shared_dir(), "fixtures"), REPO_FIXTURES] + extra
  return list(dict.fromkeys(os.path.abspath(r) for r in roots))


@dataclasses.dataclass
class Fixture:
  path: str
  config: dict
  io: dict  # name -> np.ndarray (loaded eagerly; fixtures are small)

  @property
  def kind(self) -> str:
    return self.config["kind"]

  @property
  def name(self) -> str:
    return os.path.basename(self.path.rstrip("/"))

  @property
  def weights_path(self) -> str:
    return os.path.join(self.path, "weights.safetensors")

  def weights(self) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    return load_file(self.weights_path)


def discover(kind: str | None = None) -> list[str]:
  """Paths of all fixture folders (optionally of one ``kind``) under :func:`fixture_roots`, sorted."""
  found = []
  for root in fixture_roots():
    if not os.path.isdir(root):
      continue
    for dirpath, _, files in os.walk(root):
      if {"config.json", "weights.safetensors", "io.npz"} <= set(files):
        if kind is not None:
          with open(os.path.join(dirpath, "config.json")) as f:
            if json.load(f).get("kind") != kind:
              continue
        found.append(dirpath)
  return sorted(found)


def load(path: str) -> Fixture:
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  with np.load(os.path.join(path, "io.npz"), allow_pickle=False) as z:
    io = {k: z[k] for k in z.files}
  return Fixture(path=path, config=config, io=io)


def ncthw_to_nthwc(x: np.ndarray) -> np.ndarray:
  """PyTorch video layout ``[B, C, T, H, W]`` -> ours ``[B, T, H, W, C]``."""
  return np.transpose(x, (0, 2, 3, 4, 1))


def nthwc_to_ncthw(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 4, 1, 2, 3))


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 2, 3, 1))


def fold_frames_to_nthwc(x: np.ndarray, batch: int) -> np.ndarray:
  """Torch ``(b t) c h w`` intermediate (b outer, t inner) -> ``[B, T, H, W, C]``."""
  bt, c, h, w = x.shape
  return np.transpose(x.reshape(batch, bt // batch, c, h, w), (0, 1, 3, 4, 2))


def max_rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
  """max |ours - ref| / max |ref| (the parity metric of the foundation issue)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  if ours.shape != ref.shape:
    raise AssertionError(f"shape mismatch: ours {ours.shape} vs reference {ref.shape}")
  return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12))
