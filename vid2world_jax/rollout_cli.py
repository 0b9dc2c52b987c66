"""``python -m vid2world_jax.rollout_cli``: a shim that keeps the documented command line; the rollout CLI lives in
``vid2world_jax.inference.rollout_cli``. A shim only re-exports ``main`` and runs the command line under
``__main__``; nothing imports it."""

from vid2world_jax.inference.rollout_cli import main  # noqa: F401

if __name__ == "__main__":
  from vid2world_jax.inference import rollout_cli
  rollout_cli.run()
