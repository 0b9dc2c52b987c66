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


# ------------------------------------------------------------------------------------------------ real browser
def _browser_or_skip():
  """Paths of Debian's chromium and chromedriver. CI installs them (.ci/run): missing there is a failure."""
  chrome = shutil.which("chromium") or shutil.which("chromium-browser")
  driver = shutil.which("chromedriver")
  if chrome and driver:
    return chrome, driver
  msg = "chromium / chromedriver not installed (apt-get install -y chromium chromium-driver)"
  if os.environ.get("CI"):
    pytest.fail(msg)
  pytest.skip(msg)


def _driver(chrome, driver):
  from selenium import webdriver
  opts = webdriver.ChromeOptions()
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1040,640"):
    opts.add_argument(a)
  opts.binary_location = chrome
  return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))


def _start_play_cli(args, env):
  """``python -m vid2world_jax.play ... --port=0``; returns (process, url) once it serves."""
  proc = subprocess.Popen([sys.executable, "-m", "vid2world_jax.play", *args, "--port=0"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:   # ends when the process exits
    lines.append(line)
    if line.startswith("play: open "):
      return proc, line.split()[2]
  proc.wait()
  raise AssertionError("play CLI exited before serving:\n" + "".join(lines[-40:]))


def test_play_in_browser_keys_frames_recording_and_cli_replay(tmp_path):
  """``python -m vid2world_jax.play`` on a tiny model, driven by a headless chromium: keys pressed -> new
  frames -> the saved recording -> the rollout CLI command from session.json regenerates exactly the recorded
  frames (same seed)."""
  chrome, driver = _browser_or_skip()
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait
  import _rollout_helpers as h
  h.write_toy_checkpoint(tmp_path / "work")            # a randomly initialised tiny model (configs/test_tiny:toy)
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "ctx.npz", frames=rng.integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8))
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc, url = _start_play_cli([f"--config={REPO}/configs/test_tiny.py:toy", f"--checkpoint={tmp_path / 'work'}",
                               f"--context={tmp_path / 'ctx.npz'}", "--ddim_steps=2", "--guidance=2.5", "--seed=3",
                               f"--out_dir={tmp_path / 'rec'}"], env)
  assert url.startswith("http://127.0.0.1:")
  web = _driver(chrome, driver)
  try:
    web.get(url)
    wait = WebDriverWait(web, 60)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    index = lambda: int(web.find_element(By.ID, "index").text)
    src = lambda: web.find_element(By.ID, "frame").get_attribute("src")
    seen = [src()]
    ActionChains(web).key_down(Keys.ARROW_RIGHT).perform()   # held for 3 frames, then released for 2
    for n in range(1, 6):
      if n == 4:
        ActionChains(web).key_up(Keys.ARROW_RIGHT).perform()
      web.find_element(By.ID, "step").click()
      wait.until(lambda d, n=n: index() == n)
      seen.append(src())
    assert len(set(seen)) == len(seen), "a step did not change the frame"
    assert web.find_element(By.ID, "action").text == "[0, 0]"
    web.find_element(By.ID, "save").click()
    wait.until(lambda d: d.find_element(By.ID, "saved").text != "")
    rec = web.find_element(By.ID, "saved").text
    web.find_element(By.ID, "run").click()                   # the running loop and its frames-per-second readout
    wait.until(lambda d: index() >= 8)
    time.sleep(0.3)
    web.find_element(By.ID, "run").click()
    assert float(web.find_element(By.ID, "fps").text) > 0
    assert web.find_element(By.ID, "error").text == ""
    shot = os.environ.get("V2W_PLAY_SCREENSHOT") or str(tmp_path / "play.png")   # docs/play_screenshot.png
    web.save_screenshot(shot)
  finally:
    web.quit()
    proc.terminate()
    proc.wait(timeout=30)
  from PIL import Image
  assert Image.open(shot).size[0] > 0
  np.testing.assert_array_equal(np.load(os.path.join(rec, "actions.npy")), [[1, 0]] * 3 + [[0, 0]] * 2)
  frames = np.load(os.path.join(rec, "frames.npz"))["frames"]
  assert frames.shape == (6, 16, 16, 3)
  assert video_io.read_video(os.path.join(rec, "session.mp4")).shape == frames.shape
  meta = json.load(open(os.path.join(rec, "session.json")))
  assert meta["seed"] == 3 and meta["guidance_scale"] == 2.5 and meta["context_source"].startswith("file:")
  import shlex
  cmd = shlex.split(meta["replay_command"])
  assert cmd[:3] == ["python", "-m", "vid2world_jax.rollout"] and "--ddim_steps=2" in cmd
  r = subprocess.run([sys.executable, *cmd[1:], "--noprogress"], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  replay = np.load(os.path.join(rec, "replay.npz"))["frames"][0]
  np.testing.assert_array_equal(replay, frames)


# ------------------------------------------------------------------------------------------------ contexts
def test_play_context_from_embedded_breakout_and_from_video(tmp_path):
  from vid2world_jax.play import contexts
  cfg = _config("demo")
  fn = contexts.for_config(cfg, None, 3, (32, 32, 3), 3)
  a, b = fn(0), fn(1)
  assert a.frames.shape == (3, 32, 32, 3) and a.frames.dtype == np.uint8 and a.actions.shape == (2, 3)
  assert a.source == "breakout:seed=0" and not np.array_equal(a.frames, b.frames)   # the seed sets the start
  np.testing.assert_array_equal(a.actions.sum(-1), 1.0)                              # the tracker's one-hot moves
  video_io.write_video(tmp_path / "c.mp4", np.repeat(a.frames, 2, axis=1).repeat(2, axis=2))   # 64x64 video
  c = contexts.for_config(_config("test_tiny"), str(tmp_path / "c.mp4"), 2, (16, 16, 3), 2)(5)
  assert c.frames.shape == (2, 16, 16, 3) and c.actions.shape == (1, 2) and not c.actions.any()
  with pytest.raises(ValueError, match="pass --context"):
    contexts.for_config(_config("test_tiny"), None, 1, (16, 16, 3), 2)
  with pytest.raises(ValueError, match="the model needs 4 context frames"):
    contexts.for_config(cfg, str(tmp_path / "c.mp4"), 4, (32, 32, 3), 3)
