"""benchmarks/flops_per_frame.py on the tiny config: FLOPs per generated frame from XLA's cost analysis of the
sampler's own functions (abstract inputs, nothing allocated): the frame cache costs less than the full window, the
student less than the teacher, and the per-frame totals are the documented sums of the pieces."""

import json
import os
import subprocess
import sys

import pytest

from _train_helpers import REPO


def test_flops_per_frame_tiny():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "flops_per_frame.py"), "--config=tiny",
                      "--ddim_steps=4"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(r.stdout.strip().splitlines()[-1])
  assert res["benchmark"] == "flops_per_frame" and res["ddim_steps"] == 4 and res["student_steps"] == 1
  p, f = res["pieces_flops"], res["flops_per_frame"]
  assert all(v > 0 for v in p.values())
  # guidance = 2 rows: twice the conditional pass; the new frame alone costs less than the window
  assert p["full_pass"] == pytest.approx(2 * p["full_pass_cond"], rel=0.02)
  assert p["new_pass"] == pytest.approx(2 * p["new_pass_cond"], rel=0.02)
  assert p["new_pass_cond"] < p["fill"] < p["full_pass_cond"]
  assert p["fill_branches"] == pytest.approx(p["fill"], rel=1e-3)       # the branches share the history pass
  assert f["teacher_uncached"] == pytest.approx(p["cond"] + 4 * p["full_pass"])
  assert f["teacher_cached"] == pytest.approx(p["cond"] + p["fill_branches"] + 4 * p["new_pass"])
  assert f["student_cached"] == pytest.approx(p["cond"] + p["fill"] + p["new_pass_cond"])
  assert f["teacher_cached"] < f["teacher_uncached"]
  assert f["student_cached"] < f["teacher_cached"] < f["teacher_uncached"]
  fps = res["fps_at_40pct_mfu"]
  for dev, peak in (("H100", 989e12), ("TPU v5p", 459e12)):
    assert res["peak_flops"][dev] == peak
    assert fps["student_cached"][dev] > fps["teacher_cached"][dev] > fps["teacher_uncached"][dev] > 0
    assert fps["teacher_cached"][dev] == pytest.approx(0.4 * peak / f["teacher_cached"])
