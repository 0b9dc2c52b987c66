"""A 2-process jax.distributed run on CPU (localhost coordinator, 4 fake devices each) completes two steps."""

import json
import os
import socket
import subprocess
import sys

from _train_helpers import REPO


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_distributed_two_processes_two_steps(tmp_path):
  port = _free_port()
  work = str(tmp_path / "work")
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
    cmd = [sys.executable, "-m", "vid2world_jax.train", "--config=configs/test_tiny.py:toy", f"--workdir={work}",
           "--config.total_steps=2", "--config.train.log_every=1", "--config.mesh.shape.fsdp=2",
           "--config.mesh.fsdp_min_size=64", "--verbosity=-1"]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  outs = []
  try:
    for p in procs:
      # generous: two JAX processes compile on CI's 2 cores beside the other xdist worker
      out, _ = p.communicate(timeout=900)
      outs.append(out)
  finally:
    for p in procs:   # never leave a hung peer behind
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  # Process 0 alone wrote the logs; both hosts' data positions are in the checkpoint.
  lines = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
  assert [l["step"] for l in lines] == [1, 2]
  data_dir = os.path.join(work, "checkpoints", "2", "data")
  assert sorted(f for f in os.listdir(data_dir) if f.startswith("process_")) == ["process_0-of-2.json", "process_1-of-2.json"]
  for i in range(2):
    assert json.load(open(os.path.join(data_dir, f"process_{i}-of-2.json")))["state"] == {"pos": 2}
