"""Play in the browser: key maps, the player's recordings, the local server, and a real headless browser
(Debian's chromium + chromedriver via selenium) driving a tiny world model whose recording the rollout CLI
replays to the same frames."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from vid2world_jax import video_io
from vid2world_jax.play import game, keymaps, server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))


def _config(name, arg=None):
  import importlib
  return importlib.import_module(name).get_config(arg)


# ------------------------------------------------------------------------------------------------ key maps
def test_play_keymap_breakout_one_hot():
  km = keymaps.breakout()
  np.testing.assert_array_equal(km.action([]), [1, 0, 0])
  np.testing.assert_array_equal(km.action(["ArrowLeft"]), [0, 1, 0])
  np.testing.assert_array_equal(km.action(["KeyD"]), [0, 0, 1])
  np.testing.assert_array_equal(km.action(["ArrowLeft", "ArrowRight"]), [1, 0, 0])   # both: noop


def test_play_keymap_rt1_layout():
  km = keymaps.rt1(0.5)
  a = km.action(["ArrowUp", "KeyS", "Space", "KeyJ"])
  assert a.shape == (13,)
  assert a[10] == 0.5 and a[12] == -0.5 and a[3] == 0.5 and a[6] == -0.5   # world_vector x, z; gripper; yaw
  np.testing.assert_array_equal(a[7:10], [0, 1, 0])
  np.testing.assert_array_equal(km.action(["Enter"])[7:10], [1, 0, 0])
  assert np.all(a[:3] == 0)


def test_play_keymap_csgo_keys_clicks_and_mouse_bins():
  from vid2world_jax.data import csgo
  km = keymaps.csgo()
  a = km.action(["KeyW", "ShiftRight", "Digit2"], mouse_dx=25.0, mouse_dy=-3.0, buttons=[0])
  np.testing.assert_array_equal(a, csgo.encode_action(["w", "shift", "2"], left_click=True, mouse_dx=25.0,
                                                      mouse_dy=-3.0))
  assert a[csgo.MOUSE_X_OFFSET + csgo.MOUSE_X_BINS.index(20)] == 1 and a[11] == 1 and a[12] == 0


def test_play_keymap_for_config_and_errors():
  assert keymaps.for_config(_config("demo")).name == "breakout"
  assert keymaps.for_config(_config("rt1")).name == "rt1"
  assert keymaps.for_config(_config("csgo")).name == "csgo"
  km = keymaps.for_config(_config("test_tiny"))
  assert km.name == "generic2"
  np.testing.assert_array_equal(km.action(["ArrowRight", "ArrowDown"]), [1, -1])
  with pytest.raises(ValueError, match="makes 3-dim actions, the model takes 2"):
    keymaps.for_config(_config("test_tiny"), "breakout")
  with pytest.raises(ValueError, match="unknown key map"):
    keymaps.for_config(_config("test_tiny"), "piano")


# ------------------------------------------------------------------------------------------------ player + server
class _CountingStepper:
  """TEST DOUBLE of the model (not a model): frame = previous frame + 10 + 50 * action[0] (mod 256)."""
  frame_shape, action_dim, context_frames = (8, 8, 3), 2, 1

  def start(self, context_u8, *, seed, context_actions=None):
    return context_u8[:, -1].astype(np.int32)

  def step(self, state, action, *, guidance_scale):
    f = (state + 10 + (np.asarray(action)[:, :1, None, None] * 50).astype(np.int32)) % 256
    return f.astype(np.uint8), f


def _fake_player(tmp_path, **kw):
  ctx = game.Context(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((0, 2), np.float32), "test")
  return game.Player(_CountingStepper(), keymaps.generic(2), lambda seed: ctx, guidance_scale=2.0,
                     out_dir=str(tmp_path), **kw)


def test_play_player_records_episode_files(tmp_path):
  p = _fake_player(tmp_path, replay_command=["python", "-m", "vid2world_jax.rollout", "--config=x"])
  with pytest.raises(ValueError, match="nothing to save"):
    p.save()
  for keys in (["ArrowRight"], [], ["ArrowRight"]):
    p.step(keys)
  r = p.save("rec")
  assert r["files"] == ["actions.npy", "context.npz", "frames.npz", "session.json", "session.mp4"]
  frames = np.load(tmp_path / "rec" / "frames.npz")["frames"]
  np.testing.assert_array_equal(frames[:, 0, 0, 0], [0, 60, 70, 130])
  np.testing.assert_array_equal(np.load(tmp_path / "rec" / "actions.npy"), [[1, 0], [0, 0], [1, 0]])
  assert video_io.read_video(tmp_path / "rec" / "session.mp4").shape == frames.shape
  meta = json.load(open(tmp_path / "rec" / "session.json"))
  assert meta["seed"] == 0 and meta["guidance_scale"] == 2.0 and meta["replayable"]
  assert "--seed=0" in meta["replay_command"] and "--guidance=2.0" in meta["replay_command"]
  p.set_guidance(3.0)
  p.step([])
  meta = json.load(open(os.path.join(p.save("rec2")["dir"], "session.json")))
  assert not meta["replayable"] and meta["guidance_per_frame"] == [2.0, 2.0, 2.0, 3.0]
  assert p.reset() is not None and p.status()["seed"] == 1 and p.status()["steps"] == 0


def _post(url, body, host=None):
  req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                               headers={"Content-Type": "application/json", **({"Host": host} if host else {})})
  with urllib.request.urlopen(req, timeout=10) as r:
    return json.loads(r.read())


def test_play_server_api_and_localhost_only(tmp_path):
  srv = server.PlayServer(_fake_player(tmp_path))
  srv.start_background()
  try:
    assert srv.server_address[0] == "127.0.0.1"
    page = urllib.request.urlopen(srv.url, timeout=10).read().decode()
    assert "<script>" in page and "http://" not in page and "https://" not in page   # no external asset
    r = _post(srv.url + "api/step", {"keys": ["ArrowRight"]})
    assert r["frame"].startswith("data:image/png;base64,") and r["action"] == [1.0, 0.0] and r["index"] == 1
    assert _post(srv.url + "api/guidance", {"scale": 4.5})["status"]["guidance_scale"] == 4.5
    with pytest.raises(urllib.error.HTTPError) as e:
      _post(srv.url + "api/guidance", {"scale": -1})
    assert e.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as e:
      _post(srv.url + "api/step", {"keys": []}, host="evil.example:80")
    assert e.value.code == 403
    assert _post(srv.url + "api/reset", {"seed": 7})["status"]["seed"] == 7
  finally:
    srv.shutdown()
    srv.server_close()
