"""Interactive frame rate of play (python -m vid2world_jax.play) for the demo model (configs/demo.py).

Two numbers: the model alone (``Player.step``: keys -> action -> one generated frame, after compilation) and the
whole loop in a headless chromium (page -> HTTP -> model -> PNG -> page; the page's FPS readout and frames/second
counted over ``--seconds``). ``--checkpoint``: a trained run (e.g. runs/demo); without it a randomly initialised
model of the same config (same cost per frame). Context: the embedded Breakout simulator. Last line: JSON.

  python benchmarks/play_fps.py [--checkpoint runs/demo] [--student DIR|none] [--cached] [--steps 20] [--seconds 20]

A trained default-job workdir (``--checkpoint runs/demo``) is timed with its few-step student
(``runs/demo/student``, 1 UNet pass per frame) in the same run: both frame rates and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _session(cfg, checkpoint, cached):
  from vid2world_jax import inference
  if checkpoint:
    return inference.InferenceSession.load(checkpoint, cfg, cached=cached)
  import jax
  from flax import nnx
  from vid2world_jax import world_model
  wm, _ = world_model.build(world_model.model_config(cfg), rngs=nnx.Rngs(params=0, dropout=1))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(wm, nnx.Param)))
  return inference.InferenceSession.from_params(cfg, params, cached=cached)


def _browser_fps(player, seconds, screenshot):
  from selenium import webdriver
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait
  from vid2world_jax.play import app
  srv = app.serve(player)
  srv.start_background()
  opts = webdriver.ChromeOptions()
  for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1040,640"):
    opts.add_argument(a)
  opts.binary_location = shutil.which("chromium")
  web = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
  try:
    web.get(srv.url)
    WebDriverWait(web, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    index = lambda: int(web.find_element(By.ID, "index").text)
    web.find_element(By.ID, "run").click()
    WebDriverWait(web, 120).until(lambda d: index() >= 2)   # past any first-call overhead
    n0, t0 = index(), time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:   # alternate left / right / nothing every ~second, as a player would
      phase = int(time.perf_counter() - t0) % 3
      if phase < 2:
        key = Keys.ARROW_LEFT if phase == 0 else Keys.ARROW_RIGHT
        ActionChains(web).key_down(key).pause(0.9).key_up(key).perform()
      else:
        time.sleep(0.9)
    n1, t1 = index(), time.perf_counter()
    readout = float(web.find_element(By.ID, "fps").text)
    web.find_element(By.ID, "run").click()
    if screenshot:
      time.sleep(0.5)
      web.save_screenshot(screenshot)
    return (n1 - n0) / (t1 - t0), readout, n1 - n0
  finally:
    web.quit()
    srv.shutdown()
    srv.server_close()


def _measure(cfg, checkpoint, cached, steps, seconds, screenshot) -> dict:
  from vid2world_jax.play import app
  t = time.perf_counter()
  session = _session(cfg, checkpoint, cached)
  load_s = time.perf_counter() - t
  player = app.make_player(session, cfg, seed=0, out_dir=tempfile.mkdtemp())
  t = time.perf_counter()
  player.step(["ArrowLeft"])
  compile_s = time.perf_counter() - t
  times = []
  for i in range(steps):
    t = time.perf_counter()
    player.step(["ArrowLeft"] if i % 3 == 0 else ["ArrowRight"] if i % 3 == 1 else [])
    times.append(time.perf_counter() - t)
  model_fps = 1.0 / float(np.median(times))
  sc = session.sampler
  passes = 1 if sc.guidance_scale is None else 2
  print(f"model: {'trained ' + checkpoint if checkpoint else 'randomly initialised'} configs/demo.py, "
        f"{sc.ddim_steps} DDIM steps/frame x {passes} pass(es), window {sc.window}, guidance "
        f"{player.guidance_scale if passes == 2 else 'none (folded in)'}, cached={session.cached}")
  print(f"  load {load_s:.1f} s, first frame (compile) {compile_s:.1f} s")
  print(f"  model only: median {1000 * np.median(times):.1f} ms/frame over {steps} frames = {model_fps:.2f} fps")
  browser = None
  if seconds > 0:
    fps, readout, frames = _browser_fps(player, seconds, screenshot)
    browser = {"fps": fps, "page_readout_fps": readout, "frames": frames, "seconds": seconds}
    print(f"  browser loop (headless chromium): {fps:.2f} fps ({frames} frames in {seconds:.0f} s; page readout "
          f"{readout:.2f})")
  return {"checkpoint": checkpoint, "ddim_steps": sc.ddim_steps, "passes_per_step": passes, "window": sc.window,
          "cached": session.cached, "compile_s": compile_s, "model_ms_per_frame": 1000 * float(np.median(times)),
          "model_fps": model_fps, "browser": browser}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--checkpoint", default=None, help="trained run (default: random init of configs/demo.py); the "
                  "default job's workdir also times its few-step student (<checkpoint>/student) in the same run")
  ap.add_argument("--student", default=None, help="the student's checkpoint (default: <checkpoint>/student when it "
                  "exists; 'none' = time the checkpoint alone)")
  ap.add_argument("--cached", action="store_true", help="insist on the cached fast path (default: the config's "
                  "eval.cached_rollout, 'auto' = cached for a strictly causal UNet)")
  ap.add_argument("--steps", type=int, default=20, help="timed model steps after compilation")
  ap.add_argument("--seconds", type=float, default=20.0, help="browser loop duration per model (0 = skip the browser)")
  ap.add_argument("--screenshot", default=None, help="save the page after the browser loop")
  args = ap.parse_args()
  from configs import demo
  cfg = demo.get_config()
  student = args.student
  if student is None and args.checkpoint and os.path.isdir(os.path.join(args.checkpoint, "student")):
    student = os.path.join(args.checkpoint, "student")
  if student == "none":
    student = None
  cached = True if args.cached else None
  load0 = os.getloadavg()[0]
  out = {"teacher": _measure(cfg, args.checkpoint, cached, args.steps, args.seconds, args.screenshot)}
  if student:
    out["student"] = _measure(cfg, student, cached, args.steps, args.seconds, None)
    ratio = out["student"]["model_fps"] / out["teacher"]["model_fps"]
    print(f"student / teacher frames per second (model only, same run): {ratio:.2f}x")
    out["student_over_teacher"] = ratio
  load = os.getloadavg()
  print(f"machine: {os.cpu_count()} CPU cores, load average {load0:.1f} before, {load[0]:.1f} after (shared)")
  print(json.dumps({"benchmark": "play_fps", "trained": bool(args.checkpoint), **out,
                    "model_fps": out.get("student", out["teacher"])["model_fps"],
                    "cpu_count": os.cpu_count(), "loadavg_1min": load[0]}))


if __name__ == "__main__":
  main()
