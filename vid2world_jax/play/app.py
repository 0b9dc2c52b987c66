"""Assembles the play server for a loaded model: key map, context source, player, server."""

from __future__ import annotations

import os

from vid2world_jax.play import contexts, game, keymaps, server


def make_player(session, cfg, *, context: str | None = None, context_frames: int = 0, keymap: str = "auto",
                axis_value: float = 1.0, guidance_scale: float | None = None, seed: int = 0,
                out_dir: str = "play_recordings", video_fps: float = 8.0, replay_command=None,
                info: dict | None = None) -> game.Player:
  """A ``game.Player`` on ``session`` (``inference.InferenceSession`` or any ``game.Stepper``) for config
  ``cfg``: ``context`` a video/.npz (default: the config's embedded simulator), ``context_frames`` (0 = the
  session's), ``keymap`` a ``keymaps.KEYMAPS`` name or ``auto``, ``guidance_scale`` (None = the session's, else ``inference.default_guidance``)."""
  k = int(context_frames or session.context_frames)
  km = keymaps.for_config(cfg, keymap, axis_value)
  ctx_fn = contexts.for_config(cfg, context, k, session.frame_shape, session.action_dim)
  if guidance_scale is None:
    guidance_scale = getattr(session, "guidance_scale", None)
  if guidance_scale is None:   # a Stepper without one: the run's default (the one place that picks it)
    from vid2world_jax import inference  # pylint: disable=import-outside-toplevel
    guidance_scale = inference.default_guidance(cfg)
  scale = float(guidance_scale)
  return game.Player(session, km, ctx_fn, guidance_scale=scale, seed=seed, out_dir=out_dir, video_fps=video_fps,
                     replay_command=replay_command, info=info)


def rollout_cli_command(config_args, checkpoint: str, flag_values: dict) -> list[str]:
  """The rollout CLI's command for this model and sampler, e.g. ``["python", "-m", "vid2world_jax.rollout",
  "--config=configs/demo.py", "--checkpoint=/abs/runs/demo", "--ddim_steps=5", "--nocached"]``;
  ``config_args``: the ``--config`` / ``--config.x=y`` arguments as given; ``flag_values``: CLI flag name ->
  value (booleans become ``--name`` / ``--noname``, None is left out). The recording adds the context, actions,
  seed, guidance and output flags."""
  cmd = ["python", "-m", "vid2world_jax.rollout", *config_args, f"--checkpoint={os.path.abspath(checkpoint)}"]
  for name, v in flag_values.items():
    if v is None:
      continue
    cmd.append(f"--{'' if v else 'no'}{name}" if isinstance(v, bool) else f"--{name}={v}")
  return cmd


def sampler_flag_values(session) -> dict:
  """The rollout CLI flags that reproduce ``session``'s sampler exactly (all explicit, whatever the CLI's
  defaults)."""
  sc = session.sampler
  return {"ddim_steps": int(sc.ddim_steps), "eta": float(sc.eta), "guidance_rescale": float(sc.guidance_rescale),
          "history_noise": sc.history_noise, "window": int(sc.window),
          "final_alpha_one": bool(sc.final_alpha_one), "cached": bool(session.cached)}


def serve(player: game.Player, port: int = 0, verbose: bool = False) -> server.PlayServer:
  """The server (bound to 127.0.0.1; ``port`` 0 = any free port); call ``serve_forever()`` or
  ``start_background()``."""
  return server.PlayServer(player, port=port, verbose=verbose)
