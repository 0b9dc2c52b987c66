r"""Vid2World on CS:GO (DIAMOND's dust2 dataset) with the paper's settings (spec §3, §4, §7.2).

  python -m vid2world_jax.train --config=configs/csgo.py --workdir=$WORKDIR \
      --config.init_from=$CKPT --config.data.path=$CSGO/full_res
"""

from configs import base
from configs import rt1


def get_config(arg=None):
  variant = arg or "512"
  c = base.get_base_config()
  # 51-dim multi-hot keys + one-hot mouse bins -> sum of embedding rows (spec §4).
  rt1.paper_world_model(c, variant=variant, action_dim=51, action_encoder="embedding", clip_length=16)
  c.data.source = "csgo"
  c.data.path = ""                          # DIAMOND full_res directory of .hdf5 files
  c.eval.context_frames = 4                 # 4 context frames, 12 predicted
  return c
