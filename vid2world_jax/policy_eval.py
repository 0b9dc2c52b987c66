"""``python -m vid2world_jax.policy_eval``: a shim that keeps the documented command line; the policy evaluation
and its CLI live in ``vid2world_jax.inference.policy_eval``. A shim only re-exports ``main`` and runs the command
line under ``__main__``; nothing imports it."""

from vid2world_jax.inference.policy_eval import main  # noqa: F401

if __name__ == "__main__":
  from vid2world_jax.inference import policy_eval
  policy_eval.run()
