"""The ``config.sampler`` block (diffusion/sampler_settings.py): in every config, the only source of a run's sampler
settings and default guidance, overridable on the command line, defaults for configs saved before it existed, and
guidance "none" (the conditional pass only)."""

import os
import sys

import numpy as np
import pytest

import _rollout_helpers as h

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


@pytest.mark.parametrize("name", ["base", "demo", "rt1", "csgo", "test_tiny"])
def test_every_config_has_the_whole_sampler_block(name):
  import importlib
  from vid2world_jax.diffusion import sampler_settings
  mod = importlib.import_module(f"configs.{name}")
  c = mod.get_base_config() if name == "base" else mod.get_config()
  assert set(c.sampler.keys()) == set(sampler_settings.default_sampler_config().keys())
  for knob in ("guidance_scale", "guidance_rescale"):   # one place: not repeated in eval / demo
    assert knob not in c.eval
    assert knob not in c.get("demo", {})


def test_demo_sampler_values_and_settings():
  from configs import demo
  from vid2world_jax import inference
  c = demo.get_config()
  s = inference.sampler_config(c)
  assert (s.ddim_steps, s.eta, s.final_alpha_one, s.guidance_rescale, s.history_noise) == (5, 1.0, True, 0.7, 100)
  assert s.guidance_scale == 2.5 and inference.default_guidance(c) == 2.5
  assert s.window == c.model.unet.temporal_length
  assert "ddim_steps" not in c.demo and c.demo.policy_eval.ddim_steps == 3   # an evaluation choice, kept


def test_sampler_config_reads_only_the_sampler_block():
  """A config saved before ``sampler`` existed gets the block's defaults: its old demo / eval knobs are ignored."""
  from configs import base
  from vid2world_jax import inference
  from vid2world_jax.inference import sampler as rl
  c = base.get_base_config()
  del c["sampler"]
  c.demo = {"ddim_steps": 5, "guidance_scale": 4.0, "history_noise": 100, "final_alpha_one": True}
  c.eval.guidance_scale = 3.0
  s = inference.sampler_config(c)
  d = rl.SamplerConfig()
  assert (s.ddim_steps, s.eta, s.spacing, s.history_noise, s.final_alpha_one, s.guidance_rescale) == \
      (d.ddim_steps, d.eta, d.spacing, d.history_noise, d.final_alpha_one, d.guidance_rescale) == \
      (50, 1.0, "uniform_trailing", "second_last", False, 0.7)
  assert inference.default_guidance(c) == 2.5
  # overrides (the command lines' flags) win over the block
  assert inference.sampler_config(c, ddim_steps=7, eta=0.0, history_noise=None).ddim_steps == 7
  c.sampler = {"guidance": "none", "guidance_scale": 4.0}
  assert inference.sampler_config(c).guidance_scale is None and inference.default_guidance(c) == 1.0
  for bad, match in [({"guidance": "cfgg"}, "guidance"), ({"spacing": "log"}, "spacing"),
                     ({"history_noise": "last"}, "history_noise"), ({"ddim_step": 3}, "unknown field")]:
    c.sampler = bad
    with pytest.raises(ValueError, match=match):
      inference.sampler_config(c)


def _parse(monkeypatch, argv):
  """The config that ``--config=... --config.x=y`` gives (config_flags reads the overrides from sys.argv)."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "cfg", flag_values=fv, lock_config=True)
  argv = ["prog"] + argv
  monkeypatch.setattr(sys, "argv", argv)
  fv(argv)
  return fv.config


def test_sampler_block_command_line_overrides(monkeypatch):
  """``--config.sampler.<field>=...`` reaches the sampler settings (history_noise: a string or an integer)."""
  from vid2world_jax import inference
  c = _parse(monkeypatch, [f"--config={os.path.join(REPO, 'configs', 'demo.py')}", "--config.sampler.ddim_steps=3",
                           "--config.sampler.history_noise=second_last", "--config.sampler.eta=0",
                           "--config.sampler.guidance=none"])
  s = inference.sampler_config(c)
  assert (s.ddim_steps, s.history_noise, s.eta, s.guidance_scale) == (3, "second_last", 0.0, None)
  c = _parse(monkeypatch, [f"--config={os.path.join(REPO, 'configs', 'test_tiny.py')}",
                           "--config.sampler.history_noise=40", "--config.sampler.guidance_scale=4"])
  s = inference.sampler_config(c)
  assert s.history_noise == 40 and s.guidance_scale == 4.0 and inference.default_guidance(c) == 4.0


def test_guidance_none_runs_the_conditional_pass_only():
  """A session of a config with ``sampler.guidance = "none"`` rolls out the conditional prediction whatever scale
  a call passes (== ``guidance_scale=None`` on a guided session), and its default scale is 1."""
  from vid2world_jax import inference
  from vid2world_jax.inference import sampler as rl
  c = h.tiny_model_config("toy", window=4)
  c.sampler.ddim_steps = 2
  c.sampler.guidance = "none"
  params = h.random_pure_params(c.model, 1)
  plain = inference.InferenceSession.from_params(c, params)
  assert plain.sampler.guidance_scale is None and plain.guidance_scale == 1.0
  guided = inference.InferenceSession.from_params(c, params, sampler=rl.SamplerConfig(ddim_steps=2, window=4))
  r = np.random.default_rng(0)
  ctx = r.integers(0, 256, (2, 1, 8, 8, 3)).astype(np.uint8)
  acts = r.uniform(-1, 1, (2, 3, 3)).astype(np.float32)
  want = guided.rollout(ctx, acts, guidance_scale=None, seed=2)
  np.testing.assert_array_equal(plain.rollout(ctx, acts, guidance_scale=4.0, seed=2), want)
  assert np.any(guided.rollout(ctx, acts, guidance_scale=4.0, seed=2) != want)


def test_sampler_window_knob():
  """config.sampler.window: 0 = the UNet's temporal length, a shorter window is the session's; longer than the
  UNet's temporal length, or 1, is refused."""
  from configs import test_tiny
  from vid2world_jax import inference
  cfg = test_tiny.get_config()
  assert inference.sampler_config(cfg).window == cfg.model.unet.temporal_length
  cfg.sampler.window = 3
  assert inference.sampler_config(cfg).window == 3
  for bad in (1, cfg.model.unet.temporal_length + 1, -2):
    cfg.sampler.window = bad
    with pytest.raises(ValueError, match="window"):
      inference.sampler_config(cfg)


def test_auto_cache_only_where_a_frame_takes_several_passes():
  """eval.cached_rollout "auto": the cached path for a causal UNet whose sampler makes more than one network pass
  per frame; a one-step sampler without guidance pass runs the full window (as fast or faster); "on" forces it."""
  from configs import test_tiny
  from vid2world_jax import world_model
  from vid2world_jax.inference import rollout_model
  mcfg = world_model.model_config(test_tiny.get_config())
  assert rollout_model.resolve_cached("auto", mcfg) is True
  assert rollout_model.resolve_cached("auto", mcfg, single_pass=True) is False
  assert rollout_model.resolve_cached("on", mcfg, single_pass=True) is True
  assert rollout_model.resolve_cached("off", mcfg) is False
