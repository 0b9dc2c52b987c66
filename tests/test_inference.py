"""The inference session (vid2world_jax/inference.py): step == rollout for the same seed, traced guidance scale,
loading trainer checkpoints (params only, EMA first, bf16, sharded), NAR sampling, clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _rollout_helpers as h
from vid2world_jax import inference
from vid2world_jax.storage import checkpointing
from vid2world_jax.inference import sampler as rl
from vid2world_jax.inference import loading

WINDOW = 4
SAMPLER = rl.SamplerConfig(ddim_steps=2, eta=1.0, guidance_scale=1.0, guidance_rescale=0.7, window=WINDOW)


@functools.lru_cache(maxsize=None)
def _setup(arch: str):
  """(config, random trainable params as a pure dict) of a tiny causal world model (8x8 RGB, window 4)."""
  c = h.tiny_model_config(arch, window=WINDOW)
  if arch == "unet":
    c.model.unet.channel_mult = [1]
    c.model.unet.attention_resolutions = [1]
  c.eval.context_frames = 2
  return c, h.random_pure_params(c.model, 1)


def _session(arch="toy", cached=False, params=None):
  c, p = _setup(arch)
  return inference.InferenceSession.from_params(c, p if params is None else params, sampler=SAMPLER,
                                                cached=cached)


def _inputs(b=2, k=2, t=6, seed=0):
  r = np.random.default_rng(seed)
  ctx = r.integers(0, 256, (b, k, 8, 8, 3)).astype(np.uint8)
  ca = r.uniform(-1, 1, (b, k - 1, 3)).astype(np.float32)
  acts = r.uniform(-1, 1, (b, t, 3)).astype(np.float32)
  return ctx, ca, acts


def _steps(sess, ctx, ca, acts, seed, scales):
  st = sess.start(ctx, seed=seed, context_actions=ca)
  out = []
  for i in range(acts.shape[1]):
    f, st = sess.step(st, acts[:, i], guidance_scale=scales[i])
    out.append(f)
  return np.stack(out, axis=1)


@pytest.mark.parametrize("arch,cached", [("toy", False), ("unet", True)])
def test_inference_steps_equal_rollout_frames(arch, cached):
  """T steps at a constant guidance scale == rollout() with the same seed, bit for bit (window 4, 2 context
  frames + 6 generated: the window grows, then slides)."""
  sess = _session(arch, cached)
  ctx, ca, acts = _inputs()
  want = sess.rollout(ctx, acts, guidance_scale=2.5, seed=7, context_actions=ca)
  got = _steps(sess, ctx, ca, acts, 7, [2.5] * 6)
  assert want.shape == got.shape == (2, 6, 8, 8, 3) and want.dtype == np.uint8
  np.testing.assert_array_equal(got, want)
  assert np.abs(want[:, -1].astype(int) - want[:, -2].astype(int)).max() > 0   # real, changing frames
  other = sess.rollout(ctx, acts, guidance_scale=2.5, seed=8, context_actions=ca)
  assert np.any(other != want)                                                  # the seed matters


def test_inference_guidance_scale_is_traced_and_changes_between_steps():
  sess = _session("toy")
  ctx, ca, acts = _inputs(t=4)
  const = _steps(sess, ctx, ca, acts, 3, [2.5] * 4)
  varied = _steps(sess, ctx, ca, acts, 3, [2.5, 2.5, 1.0, 4.0])
  np.testing.assert_array_equal(varied[:, :2], const[:, :2])
  assert np.any(varied[:, 2:] != const[:, 2:])
  assert sess._step._cache_size() == 1                         # one compilation for every scale
  # rollout at scale s == the latent rollout of rollout.rollout with cfg.guidance_scale = s (static)
  lat = sess.encode(ctx, seed=3)
  all_acts = np.concatenate([ca, acts], 1)
  static = rl.rollout(sess.rollout_model, SAMPLER.__class__(**{**SAMPLER.__dict__, "guidance_scale": 4.0}),
                      sess.params, lat, all_acts, rl.rollout_keys(3, 2), horizon=4)
  traced = sess.latent_rollout(lat, all_acts, guidance_scale=4.0, seed=3, horizon=4)
  np.testing.assert_allclose(np.asarray(traced), np.asarray(static), rtol=0, atol=1e-5)


def _write_trainer_checkpoint(workdir, cfg, params, ema=None, step=4):
  """A checkpoint as the trainer writes it (state with params/opt_state/step/rng [+ ema], data, meta)."""

  class _It:
    def get_state(self):
      return {"pos": 0}

  mngr = checkpointing.make_manager(str(workdir), keep=2, async_save=False)
  state = {"step": np.int32(step), "params": params, "opt_state": {"mu": params},
           "rng": np.zeros((2,), np.uint32)}
  if ema is not None:
    state["ema"] = ema
  checkpointing.save(mngr, step, state, _It(), cfg.to_json_best_effort())
  mngr.wait_until_finished()
  mngr.close()


def test_inference_load_trainer_checkpoint_params_only_ema_first(tmp_path):
  c, p = _setup("toy")
  ema = h.random_pure_params(c.model, 2)
  _write_trainer_checkpoint(tmp_path / "run", c, p, ema=ema)
  ctx, ca, acts = _inputs(t=3)
  for path in (tmp_path / "run", tmp_path / "run" / "checkpoints", tmp_path / "run" / "checkpoints" / "4"):
    sess = inference.InferenceSession.load(str(path), sampler=SAMPLER)   # config read from the checkpoint
    assert sess.frame_shape == (8, 8, 3) and sess.action_dim == 3 and sess.window == WINDOW
    assert sess.context_frames == 2
  got = sess.rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca)
  want_ema = _session("toy", params=ema).rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca)
  np.testing.assert_array_equal(got, want_ema)
  raw = inference.InferenceSession.load(str(tmp_path / "run"), c, use_ema=False, sampler=SAMPLER)
  want = _session("toy").rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca)
  np.testing.assert_array_equal(raw.rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca), want)
  assert np.any(want != want_ema)


def test_inference_load_follows_a_workdirs_model_pointer(tmp_path):
  """A recipe workdir whose model was trained in a sub-folder names it in ``model.json`` (the default job writes
  it; loading knows no layout): the workdir loads like the trainer workdir it points to; a bad pointer is a
  one-line error, never a path outside the workdir, and a pointer is followed once."""
  from vid2world_jax import user_input
  c, p = _setup("toy")
  _write_trainer_checkpoint(tmp_path / "job" / "stage_b", c, p)
  with pytest.raises(FileNotFoundError, match="model.json"):
    inference.find_state_dir(str(tmp_path / "job"))
  inference.write_model_pointer(str(tmp_path / "job"), "stage_b")
  want = str(tmp_path / "job" / "stage_b" / "checkpoints" / "4" / "state")
  assert inference.find_state_dir(str(tmp_path / "job")) == want
  assert inference.InferenceSession.load(str(tmp_path / "job"), sampler=SAMPLER).window == WINDOW
  for bad in ("/abs", "../elsewhere", "a/../../b", ""):
    with pytest.raises(user_input.UserInputError, match="inside the workdir"):
      inference.write_model_pointer(str(tmp_path / "job"), bad)
  for text, match in [('{"checkpoint": "../x"}', "inside the workdir"), ('{"other": 1}', "missing"),
                      ("not json", "not valid JSON")]:
    (tmp_path / "job" / "model.json").write_text(text)
    with pytest.raises(user_input.UserInputError, match=match):
      inference.find_state_dir(str(tmp_path / "job"))
  (tmp_path / "outer" / "inner").mkdir(parents=True)   # pointer -> a folder with its own pointer: not followed
  (tmp_path / "outer" / "model.json").write_text('{"checkpoint": "inner"}')
  (tmp_path / "outer" / "inner" / "model.json").write_text('{"checkpoint": "."}')
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    inference.find_state_dir(str(tmp_path / "outer"))


def test_inference_load_bf16_and_sharded(tmp_path, monkeypatch):
  c, p = _setup("toy")
  _write_trainer_checkpoint(tmp_path / "run", c, p)
  ctx, ca, acts = _inputs(t=2)
  ref = inference.InferenceSession.load(str(tmp_path / "run"), sampler=SAMPLER)
  want = ref.rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca)
  bf = inference.InferenceSession.load(str(tmp_path / "run"), dtype="bfloat16", sampler=SAMPLER)
  leaves = [x for x in jax.tree.leaves(bf.params[0]) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert leaves and all(x.dtype == jnp.bfloat16 for x in leaves)
  got_bf = bf.rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca)
  assert np.abs(got_bf.astype(int) - want.astype(int)).mean() < 12       # same model at lower precision
  # sharded over the 8 (fake) local devices: large leaves split, same frames up to float reassociation
  monkeypatch.setattr(loading, "SHARD_MIN_SIZE", 64)   # the toy's leaves are small: split them anyway
  sh = inference.InferenceSession.load(str(tmp_path / "run"), sampler=SAMPLER, shard=True)
  assert len(jax.local_devices()) > 1
  split = [x for x in jax.tree.leaves(sh.params[0]) if hasattr(x, "sharding")
           and not x.sharding.is_fully_replicated]
  assert split and all(len(x.sharding.device_set) == len(jax.local_devices()) for x in split)
  got_sh = sh.rollout(ctx, acts, guidance_scale=2.5, seed=1, context_actions=ca)
  assert np.abs(got_sh.astype(int) - want.astype(int)).max() <= 1


def test_inference_load_clear_errors(tmp_path):
  c, p = _setup("toy")
  with pytest.raises(FileNotFoundError, match="checkpoint not found"):
    inference.InferenceSession.load(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    inference.InferenceSession.load(str(tmp_path / "empty"))
  _write_trainer_checkpoint(tmp_path / "run", c, p)
  other = h.tiny_model_config("toy", window=WINDOW, action_dim=5)
  with pytest.raises(ValueError, match="shape"):
    inference.InferenceSession.load(str(tmp_path / "run"), other)


def test_inference_nar_sampling_and_input_errors():
  sess = _session("toy")
  ctx, ca, acts = _inputs(k=1, t=3)
  a = sess.sample_nar(ctx[:, 0], acts, guidance_scale=2.5, seed=0)
  b = sess.sample_nar(ctx, acts, guidance_scale=2.5, seed=0)
  assert a.shape == (2, 3, 8, 8, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert np.any(sess.sample_nar(ctx, acts, guidance_scale=2.5, seed=1) != a)
  with pytest.raises(ValueError, match="window"):
    sess.sample_nar(ctx, np.zeros((2, WINDOW, 3), np.float32), guidance_scale=1.0, seed=0)
  with pytest.raises(ValueError, match="context must be uint8"):
    sess.rollout(ctx.astype(np.float32), acts, guidance_scale=1.0, seed=0)
  with pytest.raises(ValueError, match="actions must be"):
    sess.rollout(ctx, acts[..., :2], guidance_scale=1.0, seed=0)
  st = sess.start(ctx, seed=0)
  with pytest.raises(ValueError, match="action must be"):
    sess.step(st, acts[0], guidance_scale=1.0)


def test_inference_long_rollout_constant_memory_and_time_per_frame():
  """Item 5: the session rolls out to any length; the window buffer has a fixed size, so frame 200 costs what
  frame 20 costs (within 1.3x) and the state does not grow. Timing: the state is a value, so blocks of 10 steps
  from the saved states at frames 20 and 200 are timed alternately, 7 times; medians compared (shared machine)."""
  import time
  sess = h.tiny_session("toy", window=8, sampler=rl.SamplerConfig(ddim_steps=3, guidance_scale=1.0, window=8))
  ctx, _, acts = _inputs(b=1, k=1, t=1)
  a = acts[:, 0]
  st = sess.start(ctx, seed=0)
  saved = {}
  for f in range(1, 201):
    if f in (20, 200):
      saved[f] = st
    frame, st = sess.step(st, a, guidance_scale=2.0)
  assert frame.shape == (1, 8, 8, 3) and st.frame == 201
  size = lambda s: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(s.window))
  assert size(saved[20]) == size(saved[200]) == size(st)            # constant memory
  assert sess._step._cache_size() == 1                              # one compilation for every frame

  def block(s):
    t0 = time.perf_counter()
    for _ in range(10):
      _, s = sess.step(s, a, guidance_scale=2.0)
    return (time.perf_counter() - t0) / 10

  times = {20: [], 200: []}
  for _ in range(7):
    for f in (20, 200):
      times[f].append(block(saved[f]))
  early, late = float(np.median(times[20])), float(np.median(times[200]))
  print(f"per-frame step time: frame 20 {1e3 * early:.2f} ms, frame 200 {1e3 * late:.2f} ms")
  assert late <= 1.3 * early, (early, late)


def test_step_compiler_options_come_from_the_config_on_cpu():
  """config.eval.cpu_step_compiler_options reach the per-frame step's compile on a CPU backend; {} = none."""
  import ml_collections
  from configs import test_tiny
  from vid2world_jax.inference import session
  cfg = test_tiny.get_config()
  assert jax.default_backend() == "cpu"
  assert session.step_compiler_options(cfg) == {"xla_cpu_experimental_ynn_fusion_type":
                                                "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
  cfg.eval.cpu_step_compiler_options = {}
  assert session.step_compiler_options(cfg) is None
  c, p = _setup("unet")
  c = ml_collections.ConfigDict(c.to_dict())
  c.eval.cpu_step_compiler_options = {"xla_cpu_experimental_ynn_fusion_type": "not_a_fusion_type"}
  sess = inference.InferenceSession.from_params(c, p, sampler=SAMPLER)
  ctx, ca, acts = _inputs(b=1)
  with pytest.raises(Exception, match="not a valid enum value"):   # the options do reach XLA
    sess.step(sess.start(ctx, seed=0, context_actions=ca), acts[:, 0], guidance_scale=1.0)
