"""Data layer: grain clip pipeline over RT-1 (RLDS), CS:GO (DIAMOND HDF5), generic .npz episodes and the embedded
Meta-World dataset. Public entry points below; see pipeline.py for the batch format."""

from vid2world_jax.data.common import BadDataError
from vid2world_jax.data.config import default_data_config
from vid2world_jax.data.pipeline import make_eval_clips
from vid2world_jax.data.pipeline import make_source
from vid2world_jax.data.pipeline import make_train_dataset
from vid2world_jax.data.pipeline import make_train_iterator


def embedded_dataset_dir(cache_dir=None, **kwargs):
  """Path of the recorded embedded Meta-World dataset (records on first use); see simulator.py."""
  from vid2world_jax.data import simulator  # pylint: disable=import-outside-toplevel
  return simulator.embedded_dataset_dir(cache_dir, **kwargs)
