"""Fuzz corpus, user files of the rollout CLI and the play page: context videos (mp4 / gif / npz) and action
.npy files, each damaged by the seeded mutator (tests/_fuzz.py). Rule (docs/reliability.md): a file is either
read into a valid array or refused with one line naming it (a user error type, exit 1 from the CLI, no
traceback, no partial output)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import _fuzz
from vid2world_jax import user_input, video_io
from vid2world_jax.inference import rollout_cli
from vid2world_jax.play import contexts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
ACTIONS = np.random.default_rng(1).uniform(-1, 1, size=(5, 2)).astype(np.float32)


def _valid_bytes(tmp_path, ext: str) -> bytes:
  p = str(tmp_path / f"valid{ext}")
  if ext == ".npz":
    np.savez(p, frames=FRAMES)
  elif ext == ".npy":
    np.save(p, ACTIONS)
  else:
    video_io.write_video(p, FRAMES, fps=4)
  with open(p, "rb") as f:
    return f.read()


def _check(fn, path, entry):
  """Rule 1 for one reader call: the value, or None after a one-line user error naming ``path``."""
  try:
    x = fn(path)
  except user_input.user_errors() as e:
    _fuzz.assert_one_line(e, path)
    _fuzz.record(entry, "refused")
    return None
  _fuzz.record(entry, "read")
  return x


def _check_context(path):
  x = _check(rollout_cli.read_context, path, "rollout_cli --context")
  if x is not None:
    assert x.dtype == np.uint8 and x.ndim == 5 and x.shape[-1] == 3 and 0 not in x.shape, x.shape
  ctx = _check(lambda p: contexts.from_file(p, 1, (16, 16, 3), 2)(0), path, "play --context")
  if ctx is not None:
    assert ctx.frames.shape == (1, 16, 16, 3) and ctx.frames.dtype == np.uint8
  return x


@pytest.mark.parametrize("ext", [".mp4", ".gif", ".npz"])
def test_fuzz_context_file_bytes(tmp_path, ext):
  variants = _fuzz.byte_variants(_valid_bytes(tmp_path, ext), "context" + ext)
  for name, data in variants.items():
    _check_context(_fuzz.write_bytes(tmp_path, f"{name}{ext}", data))
  if ext != ".npz":   # a readable video named as the wrong kind, and a folder named like a video
    assert _check_context(_fuzz.write_bytes(tmp_path, f"npz_named{ext}", _valid_bytes(tmp_path, ".npz"))) is None
  os.makedirs(tmp_path / f"folder{ext}")
  assert _check_context(str(tmp_path / f"folder{ext}")) is None
  assert _check_context(str(tmp_path / f"missing{ext}")) is None


def test_fuzz_context_npz_arrays(tmp_path):
  for name, arr in _fuzz.array_variants(FRAMES).items():
    p = str(tmp_path / f"{name}.npz")
    np.savez(p, frames=arr)
    _check_context(p)
  p = str(tmp_path / "no_frames_key.npz")
  np.savez(p, images=FRAMES)
  assert _check_context(p) is None
  p = str(tmp_path / "pickled.npz")
  np.savez(p, frames=np.array([{"a": 1}], dtype=object))
  assert _check_context(p) is None
  p = str(tmp_path / "nan_actions.npz")
  np.savez(p, frames=FRAMES, actions=np.full((3, 2), np.nan, np.float32))
  assert _check(lambda q: contexts.from_file(q, 2, (16, 16, 3), 2), p, "play --context") is None


def _check_actions(path):
  a = _check(rollout_cli.read_actions, path, "rollout_cli --actions")
  if a is not None:
    assert a.dtype == np.float32 and a.ndim == 3 and 0 not in a.shape and np.isfinite(a).all()
  return a


def test_fuzz_action_files(tmp_path):
  for name, data in _fuzz.byte_variants(_valid_bytes(tmp_path, ".npy"), "actions.npy").items():
    _check_actions(_fuzz.write_bytes(tmp_path, f"{name}.npy", data))
  for name, arr in _fuzz.array_variants(ACTIONS).items():
    p = str(tmp_path / f"arr_{name}.npy")
    np.save(p, arr)
    a = _check_actions(p)
    if name in ("all_nan", "one_nan", "one_inf", "huge_float64", "strings", "complex", "scalar", "rank1",
                "rank6", "empty"):
      assert a is None, name
  p = str(tmp_path / "pickled.npy")
  np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
  assert _check_actions(p) is None
  p = str(tmp_path / "archive.npy")
  np.savez(p, actions=ACTIONS)
  os.replace(p + ".npz", p)
  assert _check_actions(p) is None


def test_bad_input_rollout_output_written_whole_or_not_at_all(tmp_path):
  frames = np.zeros((1, 2, 16, 16, 3), np.uint8)
  out = str(tmp_path / "out.mp4")
  with pytest.raises(ValueError):
    rollout_cli.write_output(out, frames.astype(np.float32), np.zeros(1))   # the writer fails midway
  assert os.listdir(tmp_path) == []                                           # nothing partial left
  rollout_cli.write_output(out, frames, np.zeros(1))
  with pytest.raises(user_input.UserInputError, match="must end with"):
    rollout_cli.write_output(str(tmp_path / "out.avi"), frames, np.zeros(1))
  assert os.listdir(tmp_path) == ["out.mp4"]


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "vid2world_jax.rollout_cli", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)


def test_bad_input_rollout_cli_one_line_exit_1(tmp_path):
  """The issue's defects: a non-video context (41-line traceback), a truncated .npz context (32 lines), an
  action file full of NaN (accepted, black video). Each now: exit 1, one line naming the file, no output."""
  good_ctx, good_acts = str(tmp_path / "ctx.npz"), str(tmp_path / "acts.npy")
  np.savez(good_ctx, frames=FRAMES)
  np.save(good_acts, ACTIONS)
  notvideo = _fuzz.write_bytes(tmp_path, "broken.mp4", b"not a video at all\n" * 10)
  with open(good_ctx, "rb") as f:
    truncated = _fuzz.write_bytes(tmp_path, "truncated.npz", f.read()[:200])
  nan_acts = str(tmp_path / "nan.npy")
  np.save(nan_acts, np.full((5, 2), np.nan, np.float32))
  out = str(tmp_path / "out.mp4")
  for ctx, acts, bad in ((notvideo, good_acts, notvideo), (truncated, good_acts, truncated),
                         (good_ctx, nan_acts, nan_acts)):
    r = _cli(f"--checkpoint={tmp_path / 'no_such_run'}", f"--context={ctx}", f"--actions={acts}", f"--out={out}")
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and bad in lines[0], r.stderr
    assert not os.path.exists(out)
    _fuzz.record("rollout_cli (process)", "refused")
