"""Kill-and-resume: a run stopped (SIGTERM) after step n and resumed gives the same losses for n+1..m."""

import os
import signal

import numpy as np
import pytest

from _train_helpers import tiny_config
from vid2world_jax.storage import checkpointing
from vid2world_jax.training import loop


def test_resume_after_sigterm_matches_uninterrupted(tmp_path):
  cfg = tiny_config(**{"total_steps": 6, "train.ckpt_every": 100, "optim.ema_decay": 0.5})
  full = loop.train_and_evaluate(cfg, str(tmp_path / "full"))
  assert sorted(full["losses"]) == [1, 2, 3, 4, 5, 6]

  def preempt_at_3(step, metrics):
    if step == 3:
      os.kill(os.getpid(), signal.SIGTERM)   # what a TPU/SLURM preemption sends

  work = str(tmp_path / "resumed")
  first = loop.train_and_evaluate(cfg, work, step_callback=preempt_at_3)
  assert first["preempted"] and first["last_step"] == 3
  mngr = checkpointing.make_manager(work, keep=3)
  assert mngr.latest_step() == 3
  mngr.close()
  second = loop.train_and_evaluate(cfg, work)
  assert second["start_step"] == 3 and sorted(second["losses"]) == [4, 5, 6]
  for s in (4, 5, 6):
    assert second["losses"][s] == pytest.approx(full["losses"][s], rel=1e-6, abs=1e-7)
  for k in ("params", "ema"):
    a, b = second["state"][k], full["state"][k]
    import jax
    worst = max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))
    assert worst <= 1e-6, (k, worst)


def test_resume_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  cfg = tiny_config(**{"total_steps": 6, "train.ckpt_every": 1, "optim.lr": 1e15, "optim.warmup_steps": 0})
  with pytest.raises(loop.NonFiniteLoss, match=r"non-finite training values .* at step \d+: stopping; the last good checkpoint is step"):
    loop.train_and_evaluate(cfg, str(tmp_path))
  mngr = checkpointing.make_manager(str(tmp_path), keep=3)
  last = mngr.latest_step()
  mngr.close()
  assert last is not None and last >= 1
  lines = open(tmp_path / "metrics.jsonl").read().splitlines()
  assert all("NaN" not in l and "Infinity" not in l for l in lines)
