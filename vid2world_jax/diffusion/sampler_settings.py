"""The ``config.sampler`` block: how a trained world model is sampled (DDIM steps, eta, timestep spacing, causal
action guidance, history noise). Defined once here (``default_sampler_config``); ``configs/base.py`` puts it in
every config, the default job (``configs/demo.py``) sets its own values in it, and every command-line override
reaches it as ``--config.sampler.<field>=...``. Imports nothing but ml_collections, so config files can use it.

Readers: ``inference.session.sampler_config`` (the one builder of the sampler settings) and
``inference.session.default_guidance`` (the one default guidance scale), both through ``resolve``.
"""

from __future__ import annotations

import ml_collections

GUIDANCE_MODES = ("cfg", "none")
SPACINGS = ("uniform_trailing", "uniform")


def default_sampler_config() -> ml_collections.ConfigDict:
  """The ``config.sampler`` block with the paper's sampler (50 DDIM steps, eta 1, guidance 2.5, rescale 0.7)."""
  s = ml_collections.ConfigDict()
  s.ddim_steps = 50                 # DDIM steps per generated frame
  s.eta = 1.0                       # DDIM eta (1 = stochastic, as the released evaluations; 0 = deterministic)
  s.spacing = "uniform_trailing"    # DDIM timestep spacing: "uniform_trailing" (999, 979, ..., 19) | "uniform"
  s.guidance = "cfg"                # "cfg": causal action guidance, two passes per step (with the newest frame's
  #                                   action and without it) | "none": the conditional pass only (a model with
  #                                   guidance folded in, e.g. a distilled student)
  s.guidance_scale = 2.5            # causal action guidance s of the run (code convention, spec §5; 1 = no
  #                                   guidance); the default of every rollout, env and play session of the run
  s.guidance_rescale = 0.7          # CFG rescale phi in [0, 1] (0 = off)
  s.history_noise = "second_last"   # noise level t_small of history frames: "second_last" (the second-to-last
  #                                   DDIM timestep, 39 at 50 steps) or an integer timestep (written as a string
  #                                   on the command line too: --config.sampler.history_noise=100)
  s.window = 0                      # frames in the sampler's window (history + the new frame; slides after that):
  #                                   0 = the UNet's temporal length; fewer = less history, cheaper frames (the
  #                                   student trains on windows of this length, diffusion/student.py)
  s.final_alpha_one = False         # last DDIM step to alpha-bar 1 (returns x0_hat, no residual noise; matters at
  #                                   few steps) | False: DynamiCrafter's alpha-bar[0]
  return s


def resolve(cfg) -> ml_collections.ConfigDict:
  """The complete sampler block of ``cfg``: ``default_sampler_config()`` updated with ``cfg.sampler``'s fields.

  A config without a ``sampler`` block (a checkpoint saved before the block existed) gets the defaults above;
  the ``demo`` / ``eval`` blocks that used to carry these knobs are not read. ``history_noise`` comes back as
  "second_last" or an int. Raises ``ValueError`` for an unknown field, guidance mode or spacing."""
  out = default_sampler_config().to_dict()
  given = cfg.get("sampler") if hasattr(cfg, "get") else None
  for k, v in (dict(given) if given else {}).items():
    if k not in out:
      raise ValueError(f"config.sampler.{k}: unknown field (known: {', '.join(out)})")
    out[k] = v
  if out["guidance"] not in GUIDANCE_MODES:
    raise ValueError(f"config.sampler.guidance must be one of {GUIDANCE_MODES}, got {out['guidance']!r}")
  if out["spacing"] not in SPACINGS:
    raise ValueError(f"config.sampler.spacing must be one of {SPACINGS}, got {out['spacing']!r}")
  hn = out["history_noise"]
  if isinstance(hn, str) and hn != "second_last":
    try:
      hn = int(hn)
    except ValueError:
      raise ValueError(f"config.sampler.history_noise must be 'second_last' or an int, got {hn!r}") from None
  out["history_noise"] = hn
  if int(out["window"]) < 0 or int(out["window"]) == 1:
    raise ValueError(f"config.sampler.window must be 0 (the UNet's temporal length) or >= 2, got {out['window']!r}")
  out["window"] = int(out["window"])
  return ml_collections.ConfigDict(out)
