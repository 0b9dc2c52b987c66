"""Data layer: grain clip pipeline over RT-1 (RLDS), CS:GO (DIAMOND HDF5), generic .npz episodes, the embedded
Meta-World dataset and precomputed latents. Public entry points below; see pipeline.py for the batch format.

The names are resolved lazily (PEP 562): importing ``vid2world_jax.data.config`` (configs do) or ``.common``
does not import grain, so the model / step code runs where grain is not installed (benchmarks/accelerator_check).

Layer: below the trainer and the inference stack. May import ``models/``, ``world_model`` and
``conversion.init_from`` (the frozen encoders that precompute latents), ``sharding``, ``pixels``, ``video_io``,
``user_input``; never ``training/``, ``inference/``, ``demo/``, ``play/`` (tests/test_architecture.py).
"""

import importlib

_LAZY = {"BadDataError": "common", "default_data_config": "config", "make_eval_clips": "pipeline",
         "make_source": "pipeline", "make_train_dataset": "pipeline", "make_train_iterator": "pipeline"}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(f"vid2world_jax.data.{_LAZY[name]}"), name)
  raise AttributeError(f"module 'vid2world_jax.data' has no attribute {name!r}")


def embedded_dataset_dir(cache_dir=None, **kwargs):
  """Path of the recorded embedded Meta-World dataset (records on first use); see simulator.py."""
  from vid2world_jax.data import simulator  # pylint: disable=import-outside-toplevel
  return simulator.embedded_dataset_dir(cache_dir, **kwargs)
