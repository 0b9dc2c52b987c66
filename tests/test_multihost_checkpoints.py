"""Multi-host: checkpoints sealed and restored by a 2-process jax.distributed run on CPU (started as
test_train_distributed.py starts it), and bad-data skip counts that include clips skipped inside grain worker
processes (data.worker_count > 0)."""

import json
import os

import numpy as np

from _train_helpers import run_two_processes
from vid2world_jax.storage import integrity as checkpoint_integrity
from vid2world_jax.data import config as config_lib
from vid2world_jax.data import episodes, pipeline


def _write_episodes(d, good=4, bad=2):
  """``good`` readable episodes and ``bad`` whose frames are uint16 (found when a clip is read: skipped)."""
  os.makedirs(d)
  r = np.random.default_rng(0)
  for i in range(good):
    episodes.write_episode(os.path.join(d, f"ep{i}.npz"), r.integers(0, 255, (10, 16, 16, 3), dtype=np.uint8),
                           r.uniform(-1, 1, (10, 2)).astype(np.float32))
  for i in range(good, good + bad):
    np.savez(os.path.join(d, f"ep{i}.npz"), frames=r.integers(0, 255, (10, 16, 16, 3)).astype(np.uint16),
             actions=r.uniform(-1, 1, (10, 2)).astype(np.float32))


def test_multihost_grain_worker_skip_counts_equal_in_process_counts(tmp_path):
  """Skips inside grain worker processes were logged but not counted (read: None); now they travel inside the
  batches and the counts equal the in-process ones, and resume from the iterator state."""
  d = str(tmp_path / "eps")
  _write_episodes(d)
  counts, states = {}, {}
  for workers in (0, 1):
    c = config_lib.default_data_config()
    c.update(source="episodes", path=d, clip_length=3, frame_stride=1, resolution=(16, 16), action_dim=2,
             batch_size=4, num_threads=1, on_bad_data="skip", worker_count=workers, split="train")
    it = pipeline.make_train_iterator(c, process_index=0, process_count=1)
    for _ in range(3):
      assert set(next(it)) == {"frames", "actions", "episode_id"}
    states[workers] = it.get_state()
    for _ in range(3):
      next(it)
    counts[workers] = it.skip_counts()
  assert counts[0] == counts[1] and counts[1]["read"]["corrupt_file"] > 0, counts
  assert states[1]["skipped"] == states[0]["skipped"]
  it = pipeline.make_train_iterator(c, process_index=0, process_count=1)   # resumed (workers) from step 3
  it.set_state(states[1])
  for _ in range(3):
    next(it)
  assert it.skip_counts() == counts[0]


def _run_two_processes(work, data, total_steps):
  run_two_processes(work, [f"--config.total_steps={total_steps}", "--config.train.log_every=1",
                           "--config.train.ckpt_every=2", "--config.data.source=episodes", f"--config.data.path={data}",
                           "--config.data.on_bad_data=skip", "--config.data.batch_size=4",
                           "--config.data.worker_count=1"], devices=2)


def test_multihost_two_processes_seal_and_restore_checkpoint(tmp_path):
  """Two jax.distributed processes write step 2 (sealed: integrity.json verifies, both hosts' data states with
  their skip counts, grain workers included), then two new processes restore it and go on to step 4."""
  data, work = str(tmp_path / "eps"), str(tmp_path / "work")
  _write_episodes(data)
  _run_two_processes(work, data, 2)
  step2 = os.path.join(work, "checkpoints", "2")
  checkpoint_integrity.verify_step(step2, 2)   # sealed and intact
  assert checkpoint_integrity.INTEGRITY_FILE in os.listdir(step2)
  states = [json.load(open(os.path.join(step2, "data", f"process_{i}-of-2.json")))["state"] for i in range(2)]
  assert all(s["skipped"] is not None for s in states), states   # counted inside the grain workers
  _run_two_processes(work, data, 4)
  steps = [json.loads(ln)["step"] for ln in open(os.path.join(work, "metrics.jsonl"))]
  assert steps == [1, 2, 3, 4], steps   # resumed at 3: step 2 restored, not retrained
  checkpoint_integrity.verify_step(os.path.join(work, "checkpoints", "4"), 4)
