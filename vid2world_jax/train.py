r"""Diffusion-Forcing fine-tuning of a causal video UNet into an action-conditioned world model (command line).

  python -m vid2world_jax.train --config=configs/demo.py --workdir=/tmp/v2w_demo
  python -m vid2world_jax.train --config=configs/rt1.py --workdir=gs://bucket/rt1 \
      --config.init_from=/ckpt/dynamicrafter_512_converted --config.mesh.shape.fsdp=8

The same command runs on one CPU, on fake CPU devices, on a TPU pod slice (every worker runs it) or on a SLURM
GPU cluster. Multi-process runs are formed by ``jax.distributed.initialize`` from the environment
(``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``, set by launch/; or Cloud TPU / SLURM
auto-detection). The trainer itself is the flag-free library ``vid2world_jax.training``; this module only parses
the command line (flags defined under ``__main__``) and dispatches the config's job. Nothing imports it.
"""

from __future__ import annotations

import sys

from absl import logging

from vid2world_jax import logging_utils
from vid2world_jax.training import config as config_lib
from vid2world_jax.training import jobs, loop


def run(cfg, workdir: str | None, *, console_log_level: str = "warning") -> None:
  """The command line's job: one ``error: ...`` line (exit) for a user error, else train / run the recipe.
  Log records below ``console_log_level`` go to ``<workdir>/log.txt`` only (``logging_utils.route_logs``)."""
  problems = [] if workdir else ["--workdir is required (checkpoints, logs and samples go there)"]
  try:
    job = config_lib.config_job(cfg)
    if job == "train":
      config_lib.check_inputs(cfg)   # data.path / init_from: one line naming the flags, before any model is built
  except config_lib.ConfigError as e:
    problems.append(str(e))
  if problems:
    sys.exit("error: " + "; ".join(problems))
  if job in ("recipe", "demo"):
    logging_utils.route_logs(workdir, console_level=console_log_level)
    try:
      jobs.run_recipe(cfg, workdir)
    except jobs.JOB_ERRORS as e:
      sys.exit(f"error: {e}")
    return
  jobs.maybe_initialize_distributed()   # before anything touches the backend (route_logs asks the process index)
  logging_utils.route_logs(workdir, console_level=console_log_level)
  from vid2world_jax.inference import train_samples  # pylint: disable=import-outside-toplevel  (the sample rollouts)
  try:
    result = loop.train_and_evaluate(cfg, workdir, evaluators=train_samples.evaluators(cfg))
  except jobs.JOB_ERRORS as e:
    sys.exit(f"error: {e}")
  logging.info("finished at step %d%s", result["last_step"], " (preempted)" if result["preempted"] else "")


if __name__ == "__main__":
  from vid2world_jax import host_memory
  host_memory.reexec_with_huge_pages()   # restarts once with glibc.malloc.hugetlb=1 where it helps
  from absl import app, flags

  from vid2world_jax import run_flags, user_input
  _CONFIG, _WORKDIR = run_flags.define_config_and_workdir()
  logging_utils.define_console_flag()
  flags.mark_flags_as_required(["config"])
  app.run(lambda argv: run(_CONFIG.value, _WORKDIR.value, console_log_level=flags.FLAGS.console_log_level),
          flags_parser=user_input.parse_flags)
