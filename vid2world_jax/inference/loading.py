"""Finding and loading what a session needs: the checkpoint's ``state`` folder and saved config
(``find_state_dir``, ``read_config``), the parameters' target shardings (``param_shardings``) and the frozen
VAE / CLIP encoders (``load_frozen``)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vid2world_jax import world_model

# Sub-workdir of the default job (configs/demo.py) whose trainer checkpoints hold the world model.
DEMO_MODEL_DIR = "finetune"


# ------------------------------------------------------------------------------------------------------------
# Checkpoint discovery and configs.

def find_state_dir(path: str) -> str:
  """The ``state`` folder of the latest step under ``path``: a step folder, a ``checkpoints/`` folder, a
  trainer workdir, or the default job's workdir (its world model is trained in ``<path>/finetune``)."""
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  path = os.path.abspath(path)
  if os.path.basename(path) == "state" and os.path.isdir(path):
    return path
  if os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  candidates = [os.path.join(path, "checkpoints"), os.path.join(path, DEMO_MODEL_DIR, "checkpoints"), path]
  for root in candidates:
    if not os.path.isdir(root):
      continue
    steps = sorted(int(d) for d in os.listdir(root)
                   if d.isdigit() and os.path.isdir(os.path.join(root, d, "state")))
    if steps:
      return os.path.join(root, str(steps[-1]), "state")
  raise FileNotFoundError(f"no checkpoint (<step>/state) found under {path} (looked in checkpoints/, "
                          f"{DEMO_MODEL_DIR}/checkpoints/ and the folder itself)")


def read_config(state_dir: str) -> ml_collections.ConfigDict:
  """The run's config saved next to the parameters (the step's ``meta`` item, JSON)."""
  meta = os.path.join(os.path.dirname(state_dir), "meta", "metadata")
  if not os.path.exists(meta):
    raise FileNotFoundError(f"{os.path.dirname(state_dir)} has no meta/metadata (config); pass config=")
  from vid2world_jax import user_input  # pylint: disable=import-outside-toplevel
  payload = user_input.read_json(meta, "checkpoint config", required=("config",))
  if not isinstance(payload["config"], dict):
    raise user_input.UserInputError(f"checkpoint config {meta}: 'config' is not a JSON object")
  return ml_collections.ConfigDict(payload["config"])


# Parameters above this size are split over the local devices by default (below it, one device holds them: a
# replicated computation on several devices would only repeat the same work).
SHARD_ABOVE_BYTES = 1 << 28
SHARD_MIN_SIZE = 2 ** 14     # leaves with fewer elements stay replicated when sharding


def param_shardings(abstract, shard: bool | None):
  """Target shardings of the parameters: split over the local devices (fsdp rule of ``sharding``: the largest
  divisible axis of each large leaf, small leaves replicated) when ``shard`` (None: when there are several local
  devices and the parameters exceed ``SHARD_ABOVE_BYTES``), else all on the first local device."""
  from vid2world_jax import sharding
  devices = jax.local_devices()
  nbytes = sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract))
  if shard is None:
    shard = len(devices) > 1 and nbytes > SHARD_ABOVE_BYTES
  if not shard:
    one = jax.sharding.SingleDeviceSharding(devices[0])
    return jax.tree.map(lambda _: one, abstract)
  mesh = sharding.make_mesh({"data": 1, sharding.FSDP: -1}, devices)
  return sharding.tree_shardings(abstract, mesh, (), SHARD_MIN_SIZE)


def load_frozen(config, mcfg):
  """The frozen VAE / CLIP encoders from the converted checkpoint of ``config.init_from``."""
  from vid2world_jax import init_from
  if not config.get("init_from"):
    raise ValueError("the VAE / CLIP weights are not in training checkpoints: set config.init_from")
  seed = int(config.get("seed", 0))
  _, frozen = world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  _, fstate = nnx.split(frozen)
  _, fstate = init_from.load(config, mcfg, None, fstate, None, None)
  nnx.update(frozen, fstate)
  return frozen
