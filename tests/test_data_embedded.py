"""Embedded Meta-World dataset: a tiny real recording, its on-disk format/meta, caching, policy runs."""

import json
import os

import numpy as np
import pytest

from vid2world_jax.data import config as config_lib
from vid2world_jax.data import pipeline
from vid2world_jax.data import simulator


@pytest.fixture(scope="module")
def tiny_embedded(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  d = simulator.embedded_dataset_dir(cache, episodes_per_policy=2, steps=4, resolution=32,
                                     policies=("expert", "random"), progress=False)
  return cache, d


@pytest.fixture(scope="module")
def sim16():
  env = simulator.make_env(16)  # one simulator process shared by the policy tests
  yield env
  env.close()


def test_embedded_data_recording_format(tiny_embedded):
  _, d = tiny_embedded
  with open(os.path.join(d, "meta.json")) as f:
    meta = json.load(f)
  assert meta["simulator"] == "metaworld" and meta["env"] == "drawer-close-v3"
  assert meta["resolution"] == [32, 32] and meta["action_dim"] == 4 and meta["mujoco_version"]
  assert [e["name"] for e in meta["episodes"]] == ["expert_000", "expert_001", "random_000", "random_001"]
  assert all(isinstance(e["success"], bool) for e in meta["episodes"])
  with open(os.path.join(d, "splits.json")) as f:
    assert json.load(f)["test"] == ["expert_001", "random_001"]
  with np.load(os.path.join(d, "expert_000.npz")) as z:
    assert z["frames"].shape == (5, 32, 32, 3) and z["frames"].dtype == np.uint8
    assert z["actions"].shape == (5, 4) and z["actions"].dtype == np.float32
    assert np.all(np.abs(z["actions"]) <= 1.0) and z["success"].dtype == bool
    assert z["frames"].std() > 5  # a rendered scene, not a blank image
    assert np.abs(z["frames"][-1].astype(int) - z["frames"][0]).mean() > 0.1  # the arm moved
  # the same initial state for every policy: the first frames of expert_000 and random_000 are identical
  with np.load(os.path.join(d, "random_000.npz")) as z2, np.load(os.path.join(d, "expert_000.npz")) as z:
    np.testing.assert_array_equal(z["frames"][0], z2["frames"][0])


def test_embedded_data_cached_on_disk(tiny_embedded, monkeypatch):
  cache, d = tiny_embedded
  def _fail(*a, **k):
    raise AssertionError("should not record again")
  monkeypatch.setattr(simulator, "record_dataset", _fail)
  assert simulator.embedded_dataset_dir(cache, episodes_per_policy=2, steps=4, resolution=32,
                                        policies=("expert", "random")) == d
  monkeypatch.setenv("V2W_CACHE", cache)
  assert simulator.default_cache_dir() == os.path.join(cache, "embedded")


def test_embedded_data_pipeline(tiny_embedded):
  _, d = tiny_embedded
  c = config_lib.default_data_config()
  c.update(path=d, clip_length=3, resolution=(16, 16), batch_size=2, num_threads=1, action_dim=4)
  c.embedded.env = "metaworld"   # this recording is Meta-World's (4-dim actions); the default is Breakout's 3
  assert c.source == "embedded"
  b = next(pipeline.make_train_iterator(c, process_index=0, process_count=1))
  assert b["frames"].shape == (2, 3, 16, 16, 3) and b["actions"].shape == (2, 3, 4)
  assert set(b["episode_id"].tolist()) <= {0, 2}  # train split: expert_000, random_000
  ev = pipeline.make_eval_clips(c)
  assert {s.name for s in ev.specs} == {"expert_001", "random_001"}


def test_embedded_data_run_policy_deterministic(sim16):
  a = simulator.run_policy("expert_noise1.0", 11, steps=3, env=sim16)
  b = simulator.run_policy("expert_noise1.0", 11, steps=3, env=sim16)
  c = simulator.run_policy("expert_noise1.0", 12, steps=3, env=sim16)
  np.testing.assert_array_equal(a["frames"], b["frames"])
  np.testing.assert_array_equal(a["actions"], b["actions"])
  assert not np.array_equal(a["frames"][0], c["frames"][0])  # another seed, another initial drawer position
  with pytest.raises(ValueError, match="unknown policy"):
    simulator.make_policy("oracle")


def test_embedded_data_expert_succeeds_random_policy_callable(sim16):
  r = simulator.run_policy("expert", 1003, steps=45, env=sim16)
  assert r["success"] and 0 < r["success_step"] <= 45
  calls = []
  def lazy(obs, rng):
    calls.append(obs.shape)
    return np.zeros(4, np.float32)
  z = simulator.run_policy(lazy, 1003, steps=45, env=sim16)
  assert not z["success"] and len(calls) == 46 and z["frames"].shape == (46, 16, 16, 3)


def test_embedded_data_simulator_coexists_with_tensorflow(sim16):
  import tensorflow as tf  # in-process EGL rendering + TF segfaults; the default simulator is process-isolated
  r = simulator.run_policy("random", 5, steps=2, env=sim16)
  assert r["frames"].shape == (3, 16, 16, 3) and r["frames"].std() > 1
  assert int(tf.reduce_sum(tf.constant(r["frames"][0], tf.int32))) == int(r["frames"][0].astype(np.int64).sum())
