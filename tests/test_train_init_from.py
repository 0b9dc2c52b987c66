"""init_from: a converted (bidirectional) checkpoint is loaded with the causal weight transfer applied to the
temporal convs, fresh action-encoder parameters, everything else copied."""

import jax
import numpy as np
import pytest
from flax import nnx

from _train_helpers import tiny_config
from vid2world_jax import sharding
from vid2world_jax.training import setup as train_setup
from vid2world_jax.conversion import dynamicrafter
from vid2world_jax.models import unet, weight_transfer


@pytest.mark.slow   # builds the real (tiny) UNet's initialiser: minutes on 2 shared cores
def test_train_init_from_converted_checkpoint(tmp_path):
  cfg = tiny_config("unet", **{"init_transfer": "mixed"})
  src_cfg = cfg.model.unet.copy_and_resolve_references()
  src_cfg.update(dict(temporal_conv_padding="symmetric", temporal_norm="joint", use_causal_attention=False,
                      causal_init_attn=False, action_dim=0))    # DynamiCrafter as converted, no actions
  src = unet.build(src_cfg, rngs=nnx.Rngs(7))
  flat = {tuple(str(k) for k in path): np.asarray(v[...]) for path, v in nnx.to_flat_state(nnx.state(src, nnx.Param))}
  dynamicrafter.save_converted(str(tmp_path / "conv"), "256", {"unet": src_cfg}, {"unet": flat})
  cfg.init_from = str(tmp_path / "conv")
  mesh = sharding.make_mesh({"data": -1, "fsdp": 2})
  setup = train_setup.Setup(cfg, mesh)
  state, _, _ = setup.init()
  got = {tuple(sharding.path_str(p).split("/")): np.asarray(x)
         for p, x in jax.tree_util.tree_leaves_with_path(state["params"]["unet"])}
  n_transfer = n_same = 0
  for key, want in flat.items():
    if dynamicrafter.is_temporal_conv_kernel(key):
      want = weight_transfer.transfer_flax_kernel(want, "mixed")
      n_transfer += 1
    else:
      n_same += 1
    np.testing.assert_array_equal(got[key], want, err_msg="/".join(key))
  assert n_transfer > 0 and n_same > 0
  fresh = [k for k in got if "action_emb" in k]
  assert fresh and all(k not in flat for k in fresh)        # new by design, freshly initialised
  # A bad checkpoint (shape mismatch) is an error naming the weight.
  bad = dict(flat)
  k0 = next(k for k in bad if k[-1] == "kernel")
  bad[k0] = np.zeros(bad[k0].shape[:-1] + (bad[k0].shape[-1] + 1,), np.float32)
  dynamicrafter.save_converted(str(tmp_path / "bad"), "256", {"unet": src_cfg}, {"unet": bad})
  cfg.init_from = str(tmp_path / "bad")
  with pytest.raises(ValueError, match="shape mismatch " + "/".join(k0)):
    setup.init()
