"""Training entry point: bad config values stop with a one-line explanation before any compilation; the
loss falls over a short run on the small test config."""

import os
import subprocess
import sys

import numpy as np
import pytest

from _train_helpers import REPO, tiny_config
from vid2world_jax.training import loop
from vid2world_jax.training import config as train_config


@pytest.mark.parametrize("overrides, message", [
    ({"mesh.shape": {"data": -1, "fsdp": 3}}, "does not divide the 8 devices"),
    ({"data.batch_size": 12}, "data.batch_size 12 is not divisible by the data x fsdp mesh axes (8 devices)"),
    ({"data.batch_size": 8, "optim.grad_accum_steps": 2}, "optim.grad_accum_steps (2)"),
    ({"init_from": "/nonexistent/ckpt"}, "init_from checkpoint not found: /nonexistent/ckpt"),
    ({"model.first_stage": "jpeg"}, "model.first_stage must be"),
    ({"model.unet.action_dim": 3}, "model.unet.action_dim 3 != data.action_dim 2"),
    ({"model.patch_size": 4, "model.unet.in_channels": 96, "model.unet.out_channels": 48},
     "model.unet.model_channels (32) must be >= the latent channels (48)"),
])
def test_train_bad_config_values_rejected(overrides, message):
  cfg = tiny_config()
  for k, v in overrides.items():
    node = cfg
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  with pytest.raises(train_config.ConfigError) as e:
    train_config.validate_config(cfg, 8, 1)
  assert message in str(e.value) and "\n" not in str(e.value)


def _run_cli(args, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  return subprocess.Popen([sys.executable, "-m", "vid2world_jax.train", "--config=configs/test_tiny.py:toy",
                           f"--workdir={tmp_path}", "--verbosity=-1", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_train_cli_errors_are_one_line_and_precede_compilation(tmp_path):
  cases = {
      "unknown": (["--config.optim.lrr=1"], "lrr"),
      "mesh": (["--config.mesh.shape.fsdp=3"], "does not divide the 8 devices"),
      "ckpt": (["--config.init_from=/nonexistent/ckpt"], "init_from checkpoint not found"),
  }
  procs = {k: _run_cli(a, tmp_path / k) for k, (a, _) in cases.items()}
  for k, p in procs.items():
    out, err = p.communicate(timeout=300)
    assert p.returncode != 0, (k, err[-2000:])
    last = [l for l in err.strip().splitlines() if l.strip()][-1]
    assert cases[k][1] in last, (k, err[-2000:])
    assert "Traceback" not in err, (k, err[-2000:])
    assert not os.path.exists(tmp_path / k / "checkpoints"), k   # stopped before building anything


def test_train_loss_falls_on_tiny_config(tmp_path):
  cfg = tiny_config(**{"total_steps": 30, "train.ckpt_every": 1000, "optim.lr": 2e-3})
  out = loop.train_and_evaluate(cfg, str(tmp_path))
  losses = np.array([out["losses"][s] for s in range(1, 31)])
  assert np.all(np.isfinite(losses))
  assert losses[-8:].mean() < 0.7 * losses[:8].mean(), losses


def test_train_writes_sample_rollout_video(tmp_path):
  from vid2world_jax.inference import train_samples
  cfg = tiny_config(**{"total_steps": 2, "train.sample_every": 2, "train.sample_ddim_steps": 2})
  loop.train_and_evaluate(cfg, str(tmp_path), evaluators=train_samples.evaluators(cfg))
  gifs = os.listdir(tmp_path / "samples")
  assert gifs == ["rollout_gt_vs_generated_00000002.gif"]
  from vid2world_jax import video_io
  frames = video_io.read_video(tmp_path / "samples" / gifs[0])
  assert len(frames) == 4 and frames[0].shape[:2] == (16, 2 * 16 * 2)   # T frames; 2 clips x (gt | generated)


@pytest.mark.slow
def test_train_real_unet_tiny_bf16_remat_two_steps(tmp_path):
  """The real (tiny) UNet with bf16 compute and per-block remat (slow compile on CPU; toy covers the loop)."""
  cfg = tiny_config("unet", **{"total_steps": 2, "precision": "bfloat16", "remat": True})
  out = loop.train_and_evaluate(cfg, str(tmp_path))
  assert sorted(out["losses"]) == [1, 2] and all(np.isfinite(list(out["losses"].values())))
  assert jax_dtype_of(out["state"]["params"]) == {"float32"}   # fp32 master weights


def jax_dtype_of(tree):
  import jax
  return {str(x.dtype) for x in jax.tree.leaves(tree)}
