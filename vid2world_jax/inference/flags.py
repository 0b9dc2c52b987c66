"""Model flags shared by the command lines that load a trained world model (rollout, policy evaluation, play):
defined by ``define_model_flags`` (never at import), read by ``load_session_from_flags``."""

from __future__ import annotations

import numpy as np
from absl import flags

from vid2world_jax.storage.integrity import CheckpointCorrupt
from vid2world_jax.user_input import UserInputError

# what loading a model reports in one line (a missing or damaged checkpoint, a config that does not match)
LOAD_ERRORS = (FileNotFoundError, ValueError, CheckpointCorrupt)

_DEFINED = False


def define_model_flags():
  """Flags shared by the rollout and policy-evaluation CLIs."""
  global _DEFINED
  if _DEFINED:
    return
  _DEFINED = True
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "training config file (configs/*.py); default: the config saved "
                                  "with the checkpoint", lock_config=False)
  flags.DEFINE_string("checkpoint", None, "training workdir, its checkpoints/ folder, a step folder, or the default "
                      "job's workdir (e.g. runs/demo)")
  flags.DEFINE_float("guidance", None, "causal action guidance scale s (default config.sampler.guidance_scale); 1 = "
                     "conditional prediction only")
  flags.DEFINE_float("guidance_rescale", None, "CFG rescale phi (default config.sampler.guidance_rescale)")
  flags.DEFINE_integer("ddim_steps", None, "DDIM steps per generated frame (default config.sampler.ddim_steps)")
  flags.DEFINE_float("eta", None, "DDIM eta (default config.sampler.eta; 1 = stochastic, as the released "
                     "evaluation)")
  flags.DEFINE_integer("window", 0, "temporal window in frames (0 = the UNet's temporal_length)")
  flags.DEFINE_bool("final_alpha_one", None, "last DDIM step to alpha-bar 1 (returns x0_hat; no residual noise) "
                    "instead of DynamiCrafter's alpha-bar[0] (default config.sampler.final_alpha_one)")
  flags.DEFINE_string("history_noise", None, "noise level of history frames: 'second_last' or an int (default "
                      "config.sampler.history_noise)")
  flags.DEFINE_integer("seed", 0, "rollout seed (one key per rollout is split from it)")
  flags.DEFINE_bool("allow_noncausal", False, "run even if the UNet config is not strictly causal")
  flags.DEFINE_bool("cached", None, "cached fast path of the rollout (strictly causal UNet only; same frames): "
                    "each DDIM step runs the UNet on the new frame only (default config.eval.cached_rollout: 'auto' = "
                    "on for a strictly causal UNet; --nocached turns it off)")
  flags.DEFINE_bool("ema", True, "use the EMA parameters when the checkpoint has them")
  flags.DEFINE_string("dtype", None, "parameter / compute dtype, e.g. bfloat16 (default: the run's precision)")
  flags.mark_flags_as_required(["checkpoint"])


def load_session_from_flags():
  """``(InferenceSession, guidance scale)`` from the model flags: the sampler flags given override the run's
  ``config.sampler`` (``inference.sampler_config``)."""
  from vid2world_jax import inference
  f = flags.FLAGS
  hn = f.history_noise
  overrides = dict(ddim_steps=f.ddim_steps, eta=f.eta, guidance_rescale=f.guidance_rescale,
                   history_noise=None if hn is None else (hn if hn == "second_last" else int(hn)),
                   window=f.window or None, final_alpha_one=f.final_alpha_one)
  state_dir = inference.find_state_dir(f.checkpoint)
  cfg = inference.run_config(state_dir, f.config)   # --config, with the checkpoint's own sampler block
  sess = inference.InferenceSession.load(state_dir, cfg, use_ema=f.ema, dtype=f.dtype,
                                         sampler=inference.sampler_config(cfg, **overrides), cached=f.cached,
                                         allow_noncausal=f.allow_noncausal)
  scale = sess.guidance_scale if f.guidance is None else float(f.guidance)
  if not np.isfinite(scale) or scale < 0:
    raise UserInputError(f"--guidance must be a finite number >= 0, got {f.guidance}")
  return sess, scale
