"""``python -m vid2world_jax.rollout``: the rollout command line (``vid2world_jax.rollout_cli``); the sampler
itself is ``vid2world_jax.inference.sampler``. Nothing imports this module."""

if __name__ == "__main__":
  from vid2world_jax import rollout_cli
  rollout_cli.run()
