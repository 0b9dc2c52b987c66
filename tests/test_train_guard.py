"""The paper configs guard the user: without data.path / with a missing checkpoint / without init_from, the
trainer stops in ONE line naming the flag to set, before any model is built (seconds, not a 1.49 B model)."""

import os
import subprocess
import sys
import time

import pytest

from _train_helpers import REPO
from vid2world_jax.training import config as train_config


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  t0 = time.time()
  r = subprocess.run([sys.executable, "-m", "vid2world_jax.train", *args], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=300)
  return r, time.time() - t0


@pytest.mark.parametrize("config, extra, flags", [
    ("configs/rt1.py", [], ["--config.data.path=", "--config.init_from="]),
    ("configs/csgo.py", ["--config.init_from=scratch"], ["--config.data.path="]),
    ("configs/rt1.py", ["--config.data.path=/nonexistent/rt1", "--config.init_from=/nonexistent/ckpt"],
     ["--config.data.path=", "init_from checkpoint not found: /nonexistent/ckpt", "--config.init_from="]),
    ("configs/csgo.py:256", ["--config.data.path=."], ["--config.init_from=scratch"]),
])
def test_train_guard_paper_config_one_line(tmp_path, config, extra, flags):
  r, secs = _run([f"--config={config}", f"--workdir={tmp_path}", *extra])
  assert r.returncode == 1, r.stderr[-3000:]
  lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
  assert len(lines) == 1, lines
  assert lines[0].startswith("error: ")
  for f in flags:
    assert f in lines[0], (f, lines[0])
  assert "Traceback" not in r.stderr
  assert not os.listdir(tmp_path)           # nothing written: no model, no checkpoint
  assert secs < 120, secs                   # imports only (~7 s on 2 busy cores); building the model took minutes


def test_train_guard_scratch_is_explicit():
  from configs import rt1
  cfg = rt1.get_config()
  cfg.data.path = "."
  with pytest.raises(train_config.ConfigError, match="init_from=scratch"):
    train_config.check_inputs(cfg)
  cfg.init_from = "scratch"
  train_config.check_inputs(cfg)                   # explicit: accepted
  assert train_config.init_checkpoint(cfg) == ""   # and nothing is loaded
