"""Finding and loading what a session needs: the checkpoint's ``state`` folder and saved config
(``find_state_dir``, ``read_config``; a workdir's ``model.json`` pointer, ``write_model_pointer``), the
parameters' target shardings (``param_shardings``) and the frozen VAE / CLIP encoders (``load_frozen``)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vid2world_jax import world_model

# A workdir whose model was trained in a sub-folder names it here (``write_model_pointer``): ``{"checkpoint": "<path
# relative to the workdir>"}``, any form ``--checkpoint`` takes. Recipes write it (the default job: its fine-tune
# trainer's workdir), so ``InferenceSession.load(<recipe workdir>)`` finds the model without knowing the layout.
MODEL_POINTER = "model.json"


# ------------------------------------------------------------------------------------------------------------
# Checkpoint discovery and configs.

def write_model_pointer(workdir: str, checkpoint: str) -> str:
  """Writes ``<workdir>/model.json`` naming ``checkpoint`` (a trainer workdir, its ``checkpoints/`` or a step
  folder, relative to ``workdir``) as the workdir's model; returns the file's path."""
  from vid2world_jax import user_input  # pylint: disable=import-outside-toplevel
  _pointer_target(workdir, checkpoint, "model pointer")   # checked before it is written
  path = os.path.join(workdir, MODEL_POINTER)
  with user_input.atomic_output(path) as tmp, open(tmp, "w") as f:
    json.dump({"checkpoint": checkpoint}, f)
  return path


def _pointer_target(workdir: str, rel, what: str) -> str:
  from vid2world_jax import user_input  # pylint: disable=import-outside-toplevel
  if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
    raise user_input.UserInputError(f"{what} {os.path.join(workdir, MODEL_POINTER)}: 'checkpoint' must be a "
                                    f"path inside the workdir (relative, no '..'), got {rel!r}")
  return os.path.join(workdir, rel)


def find_state_dir(path: str, *, follow_pointer: bool = True) -> str:
  """The ``state`` folder of the latest step under ``path``: a step folder, a ``checkpoints/`` folder, a
  trainer workdir, or a workdir whose ``model.json`` names one of those (``write_model_pointer``; followed once)."""
  if not path or not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  path = os.path.abspath(path)
  if os.path.basename(path) == "state" and os.path.isdir(path):
    return path
  if os.path.isdir(os.path.join(path, "state")):
    return os.path.join(path, "state")
  for root in (os.path.join(path, "checkpoints"), path):
    if not os.path.isdir(root):
      continue
    steps = sorted(int(d) for d in os.listdir(root)
                   if d.isdigit() and os.path.isdir(os.path.join(root, d, "state")))
    if steps:
      return os.path.join(root, str(steps[-1]), "state")
  pointer = os.path.join(path, MODEL_POINTER)
  if follow_pointer and os.path.isfile(pointer):
    from vid2world_jax import user_input  # pylint: disable=import-outside-toplevel
    rel = user_input.read_json(pointer, "model pointer", required=("checkpoint",))["checkpoint"]
    return find_state_dir(_pointer_target(path, rel, "model pointer"), follow_pointer=False)
  raise FileNotFoundError(f"no checkpoint (<step>/state) found under {path} (looked in checkpoints/, the folder "
                          f"itself and a {MODEL_POINTER} naming the model's folder; the default job writes it when "
                          f"its fine-tune stage or its report runs)")


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


def run_config(state_dir: str, config=None) -> ml_collections.ConfigDict:
  """The config a checkpoint is sampled with: ``config`` (default: the one saved with it), whose ``sampler`` block
  is the checkpoint's own when it saved one. How a model is sampled belongs to the model (a few-step student is
  trained for its own DDIM steps, without a guidance pass), so ``--config=configs/demo.py`` does not turn a student
  back into a 5-step guided sampler; the sampler flags (``--ddim_steps``, ``--guidance``, ...) still override."""
  if config is None:
    return read_config(state_dir)
  config = ml_collections.ConfigDict(config.to_dict())
  try:
    saved = read_config(state_dir)
  except FileNotFoundError:
    return config
  if saved.get("sampler") is not None:
    config.sampler = ml_collections.ConfigDict(saved.sampler.to_dict())
  return config


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
  from vid2world_jax.conversion import init_from
  if not config.get("init_from"):
    raise ValueError("the VAE / CLIP weights are not in training checkpoints: set config.init_from")
  seed = int(config.get("seed", 0))
  _, frozen = world_model.build(mcfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  _, fstate = nnx.split(frozen)
  _, fstate = init_from.load(config, mcfg, None, fstate, None, None)
  nnx.update(frozen, fstate)
  return frozen
