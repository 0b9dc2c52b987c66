"""The generic stage runner (vid2world_jax.training.recipe) and the trainer features the recipes use: stages run in the
config's order and cached ones are skipped; train.py imports no demo code; one noise level per clip; video-only
(action-free) models; ``init_params``."""

import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from _train_helpers import REPO, tiny_config
from vid2world_jax.training import recipe

CALLS = []


def _stage_a(cfg, ctx):
  CALLS.append("a")
  return {"value": int(cfg.base)}


def _stage_b(cfg, ctx):
  CALLS.append("b")
  return {"value": ctx.outputs["a"]["value"] + 1}


def _stage_none(cfg, ctx):
  CALLS.append("none")
  return None


def _stage_always(cfg, ctx):
  CALLS.append("always")
  return {"seen": sorted(ctx.outputs), "timed": sorted(ctx.timing)}


STAGE_B = recipe.Stage(_stage_b, "b_dir/b", "(2) b")
STAGE_ALWAYS = recipe.Stage(_stage_always, None)


def _config(stages):
  c = ml_collections.ConfigDict()
  c.base = 41
  c.recipe = ml_collections.ConfigDict()
  c.recipe.stages = tuple(stages)
  c.recipe.fns = ml_collections.ConfigDict({"a": "test_recipe:_stage_a", "b": "test_recipe:STAGE_B",
                                            "none": "test_recipe:_stage_none",
                                            "always": "test_recipe:STAGE_ALWAYS"})
  c.recipe.prepare = ""
  return c


def test_recipe_runs_stages_in_config_order_and_skips_cached(tmp_path, capsys):
  CALLS.clear()
  ctx = recipe.run(_config(["a", "none", "b", "always"]), str(tmp_path))
  assert CALLS == ["a", "none", "b", "always"]
  assert ctx.outputs["b"] == {"value": 42}
  assert ctx.outputs["always"] == {"seen": ["a", "b", "none"], "timed": ["a", "b", "none"]}
  assert set(ctx.timing) == set(ctx.cpu) == {"a", "none", "b", "always"}
  assert all(v >= 0 for v in ctx.timing.values())
  assert os.path.exists(tmp_path / "a" / "output" / "tree.json")
  assert os.path.exists(tmp_path / "b_dir" / "b" / "tree.json")
  assert not os.path.exists(tmp_path / "none")        # a None output is not cached
  capsys.readouterr()
  CALLS.clear()
  ctx = recipe.run(_config(["a", "none", "b", "always"]), str(tmp_path))
  assert CALLS == ["none", "always"]                   # a and b loaded from their cache files
  assert ctx.outputs["b"] == {"value": 42}
  out = capsys.readouterr().out
  assert "stage (2) b: cached" in out and "b_dir/b" in out
  # the order is the config's: b first finds a's cached output
  CALLS.clear()
  shutil.rmtree(tmp_path / "b_dir" / "b")
  recipe.run(_config(["a", "b"]), str(tmp_path))
  assert CALLS == ["b"]


def test_recipe_outputs_round_trip_without_pickle(tmp_path):
  """Stage outputs: JSON + npz (allow_pickle=False) + orbax for parameters; types, int keys, tuples, None and
  numpy scalars survive; objects are refused (no pickle is ever written or loaded)."""
  from vid2world_jax import tree_store
  r = np.random.default_rng(0)
  obj = {"params": {"unet": {0: {"w": r.normal(size=(3, 4)).astype(np.float32)}, "b": np.arange(3)}},
         "losses": [0.5, 0.25], "seconds": np.float64(1.5), "steps": np.int32(7), "init": "pretrained",
         "none": None, "pair": (1, "x"), "videos": r.integers(0, 255, (2, 3, 4, 4, 3)).astype(np.uint8),
         "names": ["a", "b"], "nested": {"per_horizon": {"psnr": [1.0, float("nan")]}}, "flag": True}
  recipe.save(str(tmp_path / "out"), obj)
  got = recipe.load(str(tmp_path / "out"))
  assert sorted(os.listdir(tmp_path / "out")) == ["arrays.npz", "params", "tree.json"]
  np.testing.assert_array_equal(got["params"]["unet"][0]["w"], obj["params"]["unet"][0]["w"])
  assert got["params"]["unet"][0]["w"].dtype == np.float32 and list(got["params"]["unet"]) == [0, "b"]
  np.testing.assert_array_equal(got["videos"], obj["videos"])
  assert got["videos"].dtype == np.uint8
  assert got["pair"] == (1, "x") and got["none"] is None and got["seconds"] == 1.5 and got["steps"] == 7
  assert got["losses"] == [0.5, 0.25] and got["names"] == ["a", "b"] and got["flag"] is True
  assert np.isnan(got["nested"]["per_horizon"]["psnr"][1])
  with np.load(tmp_path / "out" / "arrays.npz", allow_pickle=False) as z:   # readable without pickle
    assert len(z.files) == 1
  with pytest.raises(TypeError, match="not storable without pickle"):
    tree_store.save(str(tmp_path / "bad"), {"x": object()})
  with pytest.raises(TypeError, match="dtype object"):
    tree_store.save(str(tmp_path / "bad"), {"x": np.asarray([{}], dtype=object)})
  with pytest.raises(ValueError, match="not pickles"):
    recipe.save(str(tmp_path / "x.pkl"), {"a": 1})


def test_recipe_bad_entries_are_config_errors(tmp_path):
  from vid2world_jax.training import jobs
  from vid2world_jax.training import config as train_config
  c = _config(["a", "missing"])
  with pytest.raises(ValueError, match="'missing' has no entry"):
    recipe.run(c, str(tmp_path))
  c.recipe.fns.missing = "test_recipe:no_such_function"
  with pytest.raises(ValueError, match="cannot import"):
    recipe.stages(c)
  with pytest.raises(train_config.ConfigError, match="cannot import"):
    jobs.run_recipe(c, str(tmp_path))
  c2 = tiny_config()
  c2.job = "recipe"
  with pytest.raises(train_config.ConfigError, match="needs a config.recipe block"):
    train_config.config_job(c2)


def test_train_module_imports_no_demo_code():
  prog = ("import sys, vid2world_jax.train, vid2world_jax.training.recipe; "
          "bad = [m for m in sys.modules if m.startswith('vid2world_jax.demo')]; "
          "assert not bad, bad")
  r = subprocess.run([sys.executable, "-c", prog], cwd=REPO, capture_output=True, text=True, timeout=300,
                     env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"))
  assert r.returncode == 0, r.stderr[-3000:]


def test_noise_levels_history_lightly_noised_before_a_split_frame():
  """"history": some clips have levels <= history_max_level before a split frame (the rollout's situation: a
  nearly clean history), the others iid levels; never the other way around."""
  import jax
  from vid2world_jax.training import steps
  t = np.asarray(steps.sample_noise_levels(jax.random.PRNGKey(0), 4000, 6, 1000, "history", 0.5, 200))
  assert t.shape == (4000, 6) and t.min() >= 0 and t.max() < 1000
  first_low = t[:, 0] <= 200
  assert 0.55 < first_low.mean() < 0.65          # 0.5 (history clips) + 0.5 * 0.2 (iid clips by chance)
  # in a history clip the low frames form a prefix: P(frame 1 low | frame 0 low) is far above the iid 0.2
  assert np.mean(t[first_low, 1] <= 200) > 0.5
  assert np.all(t[:, -1][t[:, 0] > 200] >= 0)
  iid = np.asarray(steps.sample_noise_levels(jax.random.PRNGKey(0), 4000, 6, 1000, "history", 0.0, 200))
  assert abs(np.mean(iid <= 200) - 0.2) < 0.02     # prob 0: plain per-frame levels
  with pytest.raises(ValueError):
    steps.sample_noise_levels(jax.random.PRNGKey(0), 2, 1, 1000, "history", 0.5, 200)


def test_noise_levels_per_clip_equal_across_frames():
  from vid2world_jax.training import steps
  key = jax.random.key(3)
  t = np.asarray(steps.sample_noise_levels(key, 16, 6, 1000, "per_clip"))
  assert t.shape == (16, 6) and t.dtype == np.int32
  assert np.all(t == t[:, :1]) and len(np.unique(t[:, 0])) > 1   # equal within a clip, different across clips
  f = np.asarray(steps.sample_noise_levels(key, 16, 6, 1000, "per_frame"))
  assert not np.all(f == f[:, :1])
  with pytest.raises(ValueError, match="noise levels"):
    steps.sample_noise_levels(key, 2, 2, 1000, "per_video")


def _setup(cfg):
  from vid2world_jax import sharding
  from vid2world_jax.training import config as train_config
  from vid2world_jax.training import setup as train_setup
  mesh = sharding.make_mesh(train_config.validate_config(cfg, jax.device_count(), jax.process_count()))
  return train_setup.Setup(cfg, mesh), mesh


def test_train_step_per_clip_noise_and_video_only_model():
  """The trainer's step with ``train.noise_levels = "per_clip"`` on an action-free (action_dim 0) model: every
  noise-level bucket counts whole clips (multiples of T frames)."""
  from vid2world_jax import sharding
  from vid2world_jax.training import config as train_config
  from vid2world_jax.training import setup as train_setup
  cfg = tiny_config(**{"train.noise_levels": "per_clip", "model.unet.action_dim": 0})
  setup, mesh = _setup(cfg)
  state, rest, frozen = setup.init()
  it = train_setup.make_data_iterator(cfg.data)
  t = int(cfg.data.clip_length)
  for _ in range(2):
    local = next(it)
    batch = sharding.to_global({"frames": local["frames"], "actions": local["actions"]}, mesh)
    state, m = setup.step(state, frozen, rest, batch)
    counts = np.asarray(m["bucket_count"])
    assert np.isfinite(float(m["loss"])) and counts.sum() == cfg.data.batch_size * t
    assert np.all(counts % t == 0), counts
  cfg.train.noise_levels = "per_video"
  with pytest.raises(train_config.ConfigError, match="train.noise_levels must be one of"):
    train_config.validate_config(cfg, 8, 1)


def test_train_init_params_start_a_fresh_run(tmp_path):
  """``train_and_evaluate(init_params=...)`` starts from the given parameters (structure and shapes checked)."""
  from vid2world_jax.training import loop
  cfg = tiny_config(**{"total_steps": 1, "optim.lr": 0.0, "optim.warmup_steps": 0})
  setup, _ = _setup(cfg)
  fresh = jax.tree.map(np.asarray, jax.device_get(setup.init()[0]["params"]))
  given = jax.tree.map(lambda x: x + 0.5, fresh)
  state = setup.init(given)[0]
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), state["params"], given)
  out = loop.train_and_evaluate(cfg, str(tmp_path), init_params=given)   # lr 0: parameters unchanged
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=1e-6), out["state"]["params"], given)
  bad = jax.tree.map(lambda x: x[..., :1] if x.ndim else x, fresh)
  with pytest.raises(ValueError, match="init_params"):
    setup.init(bad)
