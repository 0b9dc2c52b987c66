r"""Play a trained world model in the browser.

  python -m vid2world_jax.play --config=configs/demo.py --checkpoint=runs/demo
  # then open the printed http://127.0.0.1:<port>/ (this machine only)

The page shows the model's frames and sends the keys held (key maps per action space: ``play/keymaps.py``, the
README's "Play it in the browser"), with run/pause, step, reset (seed), guidance-scale controls and a frames-per-
second readout; "Save recording" writes the episode under ``--out_dir`` (mp4, frames, actions, context, and a
session.json with the rollout CLI command that replays it to the same frames). The sampler flags are the rollout
CLI's (``--ddim_steps``, ``--cached``, ``--ema`` ...); those not given keep the run's settings, and the model is
loaded as the CLI loads it (``inference.flags.load_session_from_flags``). ``--context``: a video or .npz of context
frames (default: the config's embedded simulator, reset to the episode's seed).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from vid2world_jax import user_input
from vid2world_jax.inference import flags as model_flags


def _config_args(argv) -> list[str]:
  """The ``--config`` / ``--config.x=y`` arguments as given (for the replay command)."""
  out = []
  for i, a in enumerate(argv):
    if a.startswith("--config"):
      out.append(a if "=" in a or i + 1 >= len(argv) else f"{a}={argv[i + 1]}")
  return out


def define_flags():
  model_flags.define_model_flags()
  flags.DEFINE_string("context", None, "context video (.mp4/.gif/...) or .npz ('frames' [k,H,W,3], optional "
                      "'actions' [k-1,A]); default: the config's embedded simulator")
  flags.DEFINE_integer("context_frames", 0, "context frames k (0 = config.eval.context_frames)")
  flags.DEFINE_string("keymap", "auto", "key map: auto (from the config) | breakout | metaworld | rt1 | csgo | generic")
  flags.DEFINE_float("axis_value", 1.0, "magnitude a key gives a continuous action dimension (metaworld, rt1, "
                     "generic)")
  flags.DEFINE_integer("port", 8765, "port on 127.0.0.1 (0 = any free port)")
  flags.DEFINE_string("out_dir", "play_recordings", "folder of the saved recordings")
  flags.DEFINE_float("video_fps", 8.0, "frame rate of the recorded session.mp4")


@user_input.cli_main
def main(argv):
  del argv
  from vid2world_jax.play import app as play_app
  f = flags.FLAGS
  logging.info("loading %s", f.checkpoint)
  try:
    session, scale = model_flags.load_session_from_flags()   # the rollout CLI's loading: same model, same sampler
  except model_flags.LOAD_ERRORS as e:
    raise SystemExit(f"error: {user_input.one_line(e)}") from None
  cli_flags = {**play_app.sampler_flag_values(session), "ema": bool(f.ema), "dtype": f.dtype,
               "allow_noncausal": True if f.allow_noncausal else None}
  player = play_app.make_player(
      session, session.config, context=f.context, context_frames=f.context_frames, keymap=f.keymap,
      axis_value=f.axis_value, guidance_scale=scale, seed=f.seed, out_dir=f.out_dir, video_fps=f.video_fps,
      replay_command=play_app.rollout_cli_command(
          _config_args(sys.argv[1:]), f.checkpoint, cli_flags),
      info={"checkpoint": os.path.abspath(f.checkpoint), "sampler": cli_flags})
  try:
    srv = play_app.serve(player, port=f.port)
  except OSError as e:   # port taken / not allowed
    raise SystemExit(f"error: cannot serve on 127.0.0.1:{f.port}: {e.strerror or e}") from None
  print(f"play: open {srv.url}  (key map {player.keymap.name}; Ctrl-C to stop)", flush=True)
  try:
    srv.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    srv.server_close()


if __name__ == "__main__":
  from vid2world_jax import host_memory
  host_memory.reexec_with_huge_pages()   # restarts once with glibc.malloc.hugetlb=1 where it helps
  from vid2world_jax import logging_utils
  define_flags()
  app.run(logging_utils.quiet_main(main), flags_parser=user_input.parse_flags)
