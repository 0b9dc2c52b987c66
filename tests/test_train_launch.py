"""launch/ scripts: --dry-run prints every command (gcloud / srun) with the config, workdir and overrides, and
runs nothing."""

import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dry(*args):
  out = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PATH="/usr/bin:/bin"))  # no gcloud/srun needed: nothing is run
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_train_launch_tpu_pod_dry_run_prints_each_step():
  common = ["--name", "v2w", "--zone", "us-east5-a", "--accelerator", "v5p-64"]
  create = _dry("launch/tpu_pod.sh", "--dry-run", "create", *common)
  assert "gcloud compute tpus tpu-vm create v2w" in create and "v5p-64" in create
  setup = _dry("launch/tpu_pod.sh", "--dry-run", "setup", *common)
  assert "--worker=all" in setup and "requirements.txt" in setup and "jax[tpu]" in setup.replace("\\", "")
  run = _dry("launch/tpu_pod.sh", "--dry-run", "run", *common, "--config", "configs/rt1.py", "--workdir",
             "/mnt/runs/rt1", "--", "--config.optim.lr=2e-5")
  flat = run.replace("\\", "")
  assert "--worker=all" in run and "vid2world_jax.train" in flat and "--config=configs/rt1.py" in flat
  assert "--workdir=/mnt/runs/rt1" in flat and "--config.optim.lr=2e-5" in flat and "V2W_DISTRIBUTED=1" in flat
  stop = _dry("launch/tpu_pod.sh", "--dry-run", "stop", *common)
  assert "-TERM" in stop.replace("\\", "")


def test_train_launch_slurm_dry_run_prints_srun():
  out = _dry("launch/slurm_gpu.sbatch", "--dry-run", "configs/rt1.py", "/shared/runs/rt1",
             "--config.init_from=/shared/dc512")
  assert "srun" in out and "launch/slurm_task.sh" in out
  assert "configs/rt1.py" in out and "/shared/runs/rt1" in out and "--config.init_from=/shared/dc512" in out
