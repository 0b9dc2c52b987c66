r"""Re-creates the shipped pretrained VDM of the embedded default (``vid2world_jax/demo/assets/breakout_vdm.npz``).

  python -m vid2world_jax.demo.export_pretrained --config=configs/demo.py --workdir=runs/pretrain_vdm \
      --config.demo.pretrain_steps=2000

Runs the demo's stage (a) (bidirectional, action-free video diffusion on the embedded recording, one noise level
per clip) with ``demo.pretrain=run`` in ``--workdir`` (resumable: a finished stage is reused) and writes its
parameters, with the model config and the command, to the asset file (``--out`` to write elsewhere).
"""

from __future__ import annotations

import os
import sys

from absl import flags


def main(config, workdir, out: str = ""):
  from vid2world_jax.demo import pipeline, pretrained_asset, training  # pylint: disable=import-outside-toplevel
  cfg = pipeline.with_demo(config)
  if not workdir:
    sys.exit("error: --workdir is required")
  cfg.demo.pretrain = "run"
  pre = training.pretrain(cfg, workdir)
  out = out or pretrained_asset.asset_path(cfg.demo.pretrain_asset)
  losses = pre["losses"]
  pretrained_asset.save(out, pre["params"], pre["model_config"], steps=int(pre["steps"]),
                        final_loss=float(sum(losses[-50:]) / max(len(losses[-50:]), 1)), seconds=pre["seconds"],
                        command="python -m vid2world_jax.demo.export_pretrained " + " ".join(sys.argv[1:]))
  print(f"wrote {out} ({os.path.getsize(out) / 2**20:.1f} MiB, {int(pre['steps'])} steps, "
        f"{pre['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
  from absl import app

  from vid2world_jax import logging_utils, run_flags, user_input
  _CONFIG, _WORKDIR = run_flags.define_config_and_workdir()
  _OUT = flags.DEFINE_string("out", "", "output .npz (default: the config's demo.pretrain_asset under demo/assets)")
  app.run(logging_utils.quiet_main(lambda argv: main(_CONFIG.value, _WORKDIR.value, _OUT.value),
                                   lambda: _WORKDIR.value), flags_parser=user_input.parse_flags)
