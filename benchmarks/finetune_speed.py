r"""The default job's fine-tune throughput: its Diffusion-Forcing fine-tune stage (configs/demo.py, the trainer the
README's command 1 runs) for ``--steps`` steps from random initialisation, in frames per second.

  python benchmarks/finetune_speed.py                  # 80 steps (~1.5 min on 2 cores)
  python benchmarks/finetune_speed.py --steps 200

Random initialisation instead of the job's pretrained start costs the same per step (same model, batch and clip
length) and skips the pretraining stage. The trainer logs frames/s every ``train.log_every`` steps; the figure is
the median over the logged intervals after the first (which holds the compile). The command restarts once with
transparent huge pages, as every command line of the project does (``vid2world_jax/host_memory.py``;
``V2W_HUGE_PAGES=0`` to measure without). To time an older checkout, run this file with that checkout first on
``sys.path`` (``--repo``). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=80, help="fine-tune steps (>= 2 log intervals of the demo config)")
  ap.add_argument("--repo", default=REPO, help="checkout whose vid2world_jax and configs/demo.py to time")
  args = ap.parse_args()
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, args.repo)
  try:   # checkouts that have it restart once with huge pages, as their command lines do
    from vid2world_jax import host_memory  # pylint: disable=import-outside-toplevel
    host_memory.reexec_with_huge_pages()
  except ImportError:
    pass
  import host_info  # pylint: disable=import-outside-toplevel
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("demo_config", os.path.join(args.repo, "configs", "demo.py"))
  demo_config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(demo_config)
  from vid2world_jax.demo import pipeline, training  # pylint: disable=import-outside-toplevel

  cfg = pipeline.prepare_config(demo_config.get_config())
  if args.steps < 2 * int(cfg.train.log_every):
    raise SystemExit(f"--steps must be >= {2 * int(cfg.train.log_every)} (two log intervals), got {args.steps}")
  env = host_info.environment()
  host_info.print_environment(env, f"; repo {args.repo}; load average {os.getloadavg()[0]:.2f}")
  frames_per_step = int(cfg.data.batch_size) * int(cfg.data.clip_length)
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    causal = training.causalize(cfg, None, init="scratch", transfer=str(cfg.demo.weight_transfer))
    training.run_finetune(cfg, os.path.join(workdir, "finetune"), causal, args.steps)
    seconds = time.perf_counter() - t0
    with open(os.path.join(workdir, "finetune", "metrics.jsonl")) as f:   # the trainer's MetricWriter
      rows = [json.loads(line) for line in f if line.strip()]
  fps = [float(r["frames_per_sec"]) for r in rows if "frames_per_sec" in r][1:]
  if not fps:
    raise SystemExit("the trainer logged no frames/s after its first interval")
  med = statistics.median(fps)
  print(f"fine-tune: {args.steps} steps of {frames_per_step} frames in {seconds:.1f} s (with compile); frames/s "
        f"median {med:.2f} over {len(fps)} intervals (min {min(fps):.1f}, max {max(fps):.1f})")
  print(json.dumps({**env, "repo": args.repo, "steps": args.steps,
                    "frames_per_step": frames_per_step, "frames_per_sec": [round(v, 2) for v in fps],
                    "frames_per_sec_median": round(med, 2), "seconds": round(seconds, 1)}))


if __name__ == "__main__":
  main()
