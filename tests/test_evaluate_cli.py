"""End-to-end tests of ``python -m vid2world_jax.evaluate`` on tiny random videos and random converted weights."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vid2world_jax.metrics import evaluate
from vid2world_jax.metrics import _torch_refs, frechet, image_metrics, weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _videos(seed, n=3, t=9, hw=(32, 40)):
  rng = np.random.default_rng(seed)
  gt = rng.integers(0, 256, (n, t, *hw, 3), dtype=np.uint8)
  noise = rng.integers(-30, 31, gt.shape)
  pred = np.clip(gt.astype(np.int64) + noise, 0, 255).astype(np.uint8)
  return pred, gt


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
  d = tmp_path_factory.mktemp("w")
  ref = _torch_refs.lpips_reference("alex", seed=0)
  torch.save(_torch_refs.lpips_trunk_state_dict(ref), d / "alexnet.pth")
  _, inc = _torch_refs.fid_inception_reference(seed=0)
  torch.save(inc.state_dict(), d / "pt_inception.pth")
  torch.save(_torch_refs.i3d_reference(seed=0).state_dict(), d / "i3d.pt")
  return d


def _run_cli(args, cwd):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "vid2world_jax.evaluate", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def test_evaluate_cli_end_to_end_all_metrics(tmp_path, random_weights):
  pred, gt = _videos(0)
  # --pred as a folder of two files, --gt as one file: same videos in the same order
  os.makedirs(tmp_path / "pred")
  np.savez(tmp_path / "pred" / "a.npz", videos=pred[:2])
  np.savez(tmp_path / "pred" / "b.npz", videos=pred[2:])
  np.savez(tmp_path / "gt.npz", videos=gt)
  out = tmp_path / "m.json"
  r = _run_cli(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt.npz"), "--protocol", "generic",
                "--metrics", "psnr,ssim,lpips,fid,fvd", "--lpips_net", "alex",
                "--lpips_weights", str(random_weights / "alexnet.pth"),
                "--inception_weights", str(random_weights / "pt_inception.pth"),
                "--i3d_weights", str(random_weights / "i3d.pt"), "--fid_size", "75", "--fvd_size", "64",
                "--batch_size", "8", "--output_json", str(out)], tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(out.read_text())
  m = res["metrics"]
  assert set(m) == {"psnr", "ssim", "lpips", "fid", "fvd"}
  for k in ("psnr", "ssim", "lpips", "fid", "fvd"):
    assert k in r.stdout
  # PSNR / SSIM equal the per-frame means computed directly
  x, y = pred.reshape(-1, 32, 40, 3) / 255.0, gt.reshape(-1, 32, 40, 3) / 255.0
  assert m["psnr"] == pytest.approx(float(np.mean(image_metrics.psnr(x, y))), rel=1e-5)
  assert m["ssim"] == pytest.approx(float(np.mean(image_metrics.ssim(x, y))), rel=1e-5)
  assert m["lpips"] > 0 and m["fid"] > 0 and m["fvd"] >= 0
  assert res["num_videos"] == 3 and res["frames_scored"] == 9 and res["skipped"] == {}


def test_evaluate_cli_missing_weights_skipped_by_default_error_when_asked(tmp_path):
  pred, gt = _videos(1, n=2, t=4)
  np.savez(tmp_path / "p.npz", videos=pred)
  np.savez(tmp_path / "g.npz", videos=gt)
  # default --metrics: networks without weights are skipped, with a one-line message each
  r = _run_cli(["--pred", "p.npz", "--gt", "g.npz", "--output_json", "out.json"], tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads((tmp_path / "out.json").read_text())
  assert set(res["metrics"]) == {"psnr", "ssim"}
  assert set(res["skipped"]) == {"lpips", "fid", "fvd"}
  assert "--inception_weights" in res["skipped"]["fid"] and "skipped" in r.stdout
  # explicitly requested metric with a missing file: clear error, non-zero exit, no traceback
  r = _run_cli(["--pred", "p.npz", "--gt", "g.npz", "--metrics", "psnr,fvd", "--i3d_weights", "nope.pt"], tmp_path)
  assert r.returncode == 1
  assert "i3d weights file not found: nope.pt" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_metric_function_protocol_and_errors():
  pred, gt = _videos(2, n=2, t=16, hw=(24, 24))
  res = evaluate.evaluate(pred, gt, protocol_name="rt1", metrics=["psnr", "ssim"])
  assert res["frames_scored"] == 16
  res_same = evaluate.evaluate(gt, gt, protocol_name="rt1", metrics=["ssim"])
  assert res_same["metrics"]["ssim"] == pytest.approx(1.0, abs=1e-5)
  with pytest.raises(weights.MissingWeightsError):
    evaluate.evaluate(pred, gt, metrics=["lpips"], explicit=True)
  res = evaluate.evaluate(pred, gt, metrics=["psnr", "lpips"], explicit=False, log=lambda s: None)
  assert "lpips" in res["skipped"] and "psnr" in res["metrics"]
  with pytest.raises(ValueError, match="differ in shape"):
    evaluate.evaluate(pred, gt[:1])
  with pytest.raises(ValueError, match="unknown metrics"):
    evaluate.evaluate(pred, gt, metrics=["mse"])
  assert frechet.frechet_distance_from_features(np.eye(3), np.eye(3)) == pytest.approx(0.0, abs=1e-9)
