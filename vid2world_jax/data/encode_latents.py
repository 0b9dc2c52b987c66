r"""Encode a dataset once with the frozen VAE (+ CLIP image tokens) for training without encoders in the step.

  python -m vid2world_jax.data.encode_latents --config=configs/rt1.py --out=$LATENTS \
      --config.init_from=$CKPT --config.data.path=$RT1/fractal20220817_data/0.1.0
  python -m vid2world_jax.train --config=configs/rt1.py --workdir=$WORKDIR --config.init_from=$CKPT \
      --config.data.source=latents --config.data.path=$LATENTS --config.data.augment=False

Writes ArrayRecord shards + meta.json (format: vid2world_jax/data/latents.py); rerun the same command to resume
(finished shards are skipped). Encodes ``data.split`` of ``data.source`` (rt1, csgo, episodes, embedded).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from vid2world_jax import user_input

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (configs/*.py): data + model blocks.")
_OUT = flags.DEFINE_string("out", None, "Output directory (created; resumed when it exists).")
_EPISODES_PER_SHARD = flags.DEFINE_integer("episodes_per_shard", 64, "Episodes per ArrayRecord shard.")
_BATCH_FRAMES = flags.DEFINE_integer("batch_frames", 16, "Frames encoded per jitted call.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "float16"], "Storage dtype of moments and tokens.")
_RANDOM = flags.DEFINE_bool("allow_random_encoders", False, "Random VAE/CLIP weights without init_from (tests).")


@user_input.cli_main
def main(argv):
  del argv
  from vid2world_jax.data import latents_writer  # pylint: disable=import-outside-toplevel
  cfg = _CONFIG.value
  try:
    graphdef, state = latents_writer.frozen_stage(cfg, allow_random=_RANDOM.value)
    stats = latents_writer.encode_dataset(cfg, _OUT.value, graphdef, state,
                                          episodes_per_shard=_EPISODES_PER_SHARD.value,
                                          batch_frames=_BATCH_FRAMES.value, dtype=_DTYPE.value)
  except ValueError as e:  # bad config / data (BadDataError is a ValueError): one line
    sys.exit(f"error: {e}")
  print(f"wrote {stats['shards_written']} shards ({stats['shards_skipped']} already finished), "
        f"{stats['episodes']} episodes, {stats['frames']} frames to {_OUT.value}")


if __name__ == "__main__":
  from vid2world_jax import logging_utils
  flags.mark_flags_as_required(["config", "out"])
  app.run(logging_utils.quiet_main(main), flags_parser=user_input.parse_flags)
