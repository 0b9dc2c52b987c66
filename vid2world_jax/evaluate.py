"""``python -m vid2world_jax.evaluate``: a shim that keeps the documented command line; the video-prediction metrics
CLI lives in ``vid2world_jax.metrics.evaluate``. A shim only re-exports ``main`` and runs the command line under
``__main__``; nothing imports it."""

from vid2world_jax.metrics.evaluate import main  # noqa: F401

if __name__ == "__main__":
  from vid2world_jax.metrics import evaluate
  evaluate.run()
