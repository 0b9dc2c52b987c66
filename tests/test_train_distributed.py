"""A 2-process jax.distributed run on CPU (localhost coordinator, 4 fake devices each) completes two steps."""

import json
import os

from _train_helpers import run_two_processes


def test_distributed_two_processes_two_steps(tmp_path):
  work = str(tmp_path / "work")
  run_two_processes(work, ["--config.total_steps=2", "--config.train.log_every=1"], devices=4)
  # Process 0 alone wrote the logs; both hosts' data positions are in the checkpoint.
  lines = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [1, 2]
  data_dir = os.path.join(work, "checkpoints", "2", "data")
  assert sorted(f for f in os.listdir(data_dir) if f.startswith("process_")) == ["process_0-of-2.json", "process_1-of-2.json"]
  for i in range(2):
    assert json.load(open(os.path.join(data_dir, f"process_{i}-of-2.json")))["state"] == {"pos": 2}
