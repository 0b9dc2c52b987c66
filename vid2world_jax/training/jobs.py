"""Running a config's job: "train" (``loop.train_and_evaluate``) or "recipe" (``recipe.run``), with the
multi-process setup from the environment and the errors a job reports in one line (``JOB_ERRORS``)."""

from __future__ import annotations

import os

import jax

from vid2world_jax.storage import checkpointing
from vid2world_jax.data.common import BadDataError
from vid2world_jax.training import loop
from vid2world_jax.training.config import ConfigError

# what a job reports as one "error: ..." line (no traceback)
JOB_ERRORS = (ConfigError, loop.NonFiniteLoss, BadDataError, loop.CheckpointError, checkpointing.CheckpointCorrupt)


def maybe_initialize_distributed() -> None:
  """Forms a multi-process job from the environment (no-op for a single process)."""
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(env["JAX_NUM_PROCESSES"]),
                               process_id=int(env["JAX_PROCESS_ID"]))
  elif (env.get("V2W_DISTRIBUTED") == "1" or int(env.get("SLURM_NTASKS", "1")) > 1
        or "," in env.get("TPU_WORKER_HOSTNAMES", "")):
    jax.distributed.initialize()  # Cloud TPU / SLURM cluster auto-detection


def run_recipe(cfg, workdir: str):
  """``config.job == "recipe"``: the config's stages (the recipe's ``prepare`` hook checks the config first)."""
  from vid2world_jax.training import recipe  # pylint: disable=import-outside-toplevel
  try:
    cfg = recipe.prepare(cfg)
    recipe.stages(cfg)   # every stage importable before anything runs
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return recipe.run(cfg, workdir, prepared=True)
