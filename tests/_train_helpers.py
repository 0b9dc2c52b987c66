"""Shared helpers of the tests/test_train_*.py files (tiny configs, repo paths)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def tiny_config(arch: str = "toy", **overrides):
  """configs/test_tiny.py (toy denoiser by default: compiles in seconds on 2 shared cores)."""
  from configs import test_tiny
  cfg = test_tiny.get_config("toy" if arch == "toy" else None)
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def run_two_processes(work: str, extra_args, devices: int) -> list[str]:
  """Runs ``python -m vid2world_jax.train`` (configs/test_tiny.py:toy, fsdp 2) as 2 jax.distributed processes on CPU
  with a localhost coordinator and ``devices`` fake devices each; asserts both exit 0 and returns their outputs.
  A hung peer is killed, never left behind."""
  import socket
  import subprocess
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
    cmd = [sys.executable, "-m", "vid2world_jax.train", "--config=configs/test_tiny.py:toy", f"--workdir={work}",
           *extra_args, "--config.mesh.shape.fsdp=2", "--config.mesh.fsdp_min_size=64", "--verbosity=-1"]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  outs = []
  try:
    for p in procs:
      # generous: two JAX processes compile on CI's 2 cores beside the other xdist worker
      out, _ = p.communicate(timeout=900)
      outs.append(out)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  return outs
