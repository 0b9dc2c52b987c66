"""benchmarks/original_rollout.py: the side-by-side benchmark with the original Vid2World PyTorch rollout. Here
(no network, no original checkout) its JAX side runs on a tiny setting and it says in one line that the original
was not timed; with ``$V2W_ORIGINAL_ROOT`` set (a checkout containing WorldFoundry's ``worldfoundry/``) the
original is timed too."""

import json
import os
import subprocess
import sys

import pytest

from _train_helpers import REPO

SCRIPT = os.path.join(REPO, "benchmarks", "original_rollout.py")
TINY_RUN = ["--frames=2", "--ddim_steps=2", "--hw=4", "--repeats=1"]


def _run(args, timeout, **env_overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  env.pop("V2W_ORIGINAL_ROOT", None)
  env.update(env_overrides)
  r = subprocess.run([sys.executable, SCRIPT, *args], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=timeout)
  return r, [line for line in r.stdout.splitlines() if line.strip()]


def _check_project_side(res):
  assert res["benchmark"] == "original_rollout"
  for key, steps, passes, cached in (("teacher_uncached", 2, 2, False), ("teacher_cached", 2, 2, True),
                                     ("student_cached", 1, 1, True)):
    r = res["project"][key]
    assert (r["ddim_steps"], r["passes_per_step"], r["cached"]) == (steps, passes, cached)
    assert r["finite"] and r["best_s"] > 0 and r["frames_per_s"] > 0 and r["first_call_s"] > 0
    assert res["frames_per_s"][key] == pytest.approx(r["frames_per_s"], rel=1e-3)
  assert set(res["ratios"]) >= {"teacher_cached_over_uncached", "student_over_teacher_cached"}
  assert all(v > 0 for v in res["ratios"].values())
  c = res["config"]
  assert (c["generated_frames"], c["latent_hw"], c["batch"], c["context_frames"]) == (2, 4, 1, 1)
  assert res["machine"]["cpu_count"] >= 1


def test_original_rollout_arguments_and_missing_root_message():
  """Argument errors come before any model is built; without a root the run says so in exactly one line."""
  r, _ = _run(["--frames=8"], timeout=120)
  assert r.returncode != 0 and "exceed the window 8" in r.stderr
  r, _ = _run(["--ddim_steps=1"], timeout=120)
  assert r.returncode != 0 and "--ddim_steps must be >= 2" in r.stderr
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  try:
    import original_rollout
  finally:
    sys.path.pop(0)
  old = os.environ.pop("V2W_ORIGINAL_ROOT", None)
  try:
    assert original_rollout.parse_args([]).original_root == ""
    os.environ["V2W_ORIGINAL_ROOT"] = "/some/checkout"
    assert original_rollout.parse_args([]).original_root == "/some/checkout"
  finally:
    os.environ.pop("V2W_ORIGINAL_ROOT", None)
    if old is not None:
      os.environ["V2W_ORIGINAL_ROOT"] = old


@pytest.mark.slow   # three tiny rollouts jitted: ~1-2 min on 2 shared cores
def test_original_rollout_jax_side_without_the_original(tmp_path):
  missing = str(tmp_path / "no_checkout")
  r, lines = _run([f"--original_root={missing}", *TINY_RUN], timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  said = [line for line in lines if line.startswith("original: not timed")]
  assert len(said) == 1 and missing in said[0] and "this project's side only" in said[0], lines
  res = json.loads(lines[-1])
  assert res["original_timed"] is False and res["original"] is None and missing in res["original_unavailable"]
  assert res["same_weights_max_rel_err"] is None and "original" not in res["frames_per_s"]
  _check_project_side(res)
  table = [line for line in lines if line.startswith("project ")]
  assert [t.split(",")[0] for t in table] == ["project teacher", "project teacher", "project student"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("V2W_ORIGINAL_ROOT"), reason="needs $V2W_ORIGINAL_ROOT (WorldFoundry checkout)")
def test_original_rollout_with_the_original():
  r, lines = _run(TINY_RUN, timeout=1200, V2W_ORIGINAL_ROOT=os.environ["V2W_ORIGINAL_ROOT"])
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(lines[-1])
  assert res["original_timed"] and res["original"]["finite"] and res["original"]["frames_per_s"] > 0
  assert res["same_weights_max_rel_err"] < 1e-4      # the converted weights are the original's
  assert res["ratios"]["teacher_cached_over_original"] > 0
  _check_project_side(res)
