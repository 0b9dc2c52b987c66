"""The default run (vid2world_jax.demo): a shortened end-to-end run (toy denoiser, 16x16 frames, a few steps),
stage caching, the ablation table, the weight transfer of the pretrained model and the report pieces."""

import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)


def demo_test_config(arch="toy", policy_eval=True):
  from configs import base
  from vid2world_jax.demo import defaults, pipeline
  c = base.get_base_config()
  c.model.arch = arch
  c.model.patch_size = 2
  c.model.context_len = 2
  c.model.unet = base.tiny_unet_config(channels=32, in_channels=24, out_channels=12, frames=4, action_dim=3,
                                       context_dim=16)
  c.data.source = "embedded"       # Breakout, a small recording
  c.data.embedded.episodes_per_policy = 8
  c.data.embedded.steps = 16
  c.data.embedded.miss_hold = 2    # <= clip_length - 2
  c.data.resolution = (32, 32)
  c.data.clip_length = 4
  c.data.batch_size = 8            # divisible by the 8 fake test devices
  c.data.action_dim = 3
  c.optim.lr = 1e-3
  c.demo = pipeline.default_demo_config()
  c.recipe = pipeline.default_recipe_config()
  c.sampler = defaults.demo_sampler_config()
  c.sampler.ddim_steps = 2
  d = c.demo
  d.pretrain = "run"               # pretrain here (the shipped file is for the default Breakout model)
  d.pretrain_steps = 2
  d.finetune_steps = 2
  d.eval_clips = 3
  d.eval_batch = 2
  d.guidance_sweep = [1.0, 2.5]
  d.num_videos = 2
  d.progress = False
  d.policy_eval.enabled = policy_eval
  d.policy_eval.policies = ["tracker", "random"]
  d.policy_eval.episodes = 2
  d.policy_eval.horizon = 4
  d.policy_eval.ddim_steps = 2
  d.long_horizon = 2               # 2 windows of 4 frames -> 8 generated frames
  d.long_horizon_clips = 2
  d.video_scale = 3
  d.very_long_horizon = 10         # one simulator episode of 10 frames (the tracker from seed 9500)
  d.very_long_horizon_clips = 1
  d.out_of_family.contexts = 2     # 2 contexts x (4 families + control) = 10 clips
  d.ablations.transfers = ["mask", "mixed"]
  d.student.steps = 2              # the few-step student stage (demo/student.py)
  d.student.batch_size = 8         # divisible by the 8 fake test devices
  d.student.fps_frames = 2
  d.catch_test.episodes = 2        # tracker + random from 2 states: a few deciding frames
  return c


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  from vid2world_jax.demo import pipeline
  wd = str(tmp_path_factory.mktemp("demo"))
  metrics = pipeline.run(demo_test_config(), wd)
  return wd, metrics


def test_demo_end_to_end_report(demo_run):
  wd, m = demo_run
  rdir = os.path.join(wd, "report")
  for f in ("metrics.md", "metrics.json", "plots/error_vs_horizon.png", "plots/metric_vs_guidance.png"):
    assert os.path.getsize(os.path.join(rdir, f)) > 0, f
  gifs = [f for f in os.listdir(os.path.join(rdir, "videos")) if f.endswith(".gif")]
  assert len(gifs) >= 2
  with open(os.path.join(rdir, "metrics.json")) as f:
    js = json.load(f)
  assert js["horizons"] == [1, 2, 3]
  for name in ("world_model", "copy_last_frame", "shuffled_actions"):
    ph = js["per_horizon"][name]
    assert len(ph["psnr"]) == 3 and len(ph["ssim"]) == 3
    assert all(np.isfinite(ph["psnr"])) and all(-1.0 <= s <= 1.0 for s in ph["ssim"])
  # copy-last-frame is scored against the same clips: Breakout frames are mostly static background, so copying
  # frame 0 is far better than noise, and worse at later horizons as the ball and paddle move away
  cl = js["per_horizon"]["copy_last_frame"]["psnr"]
  assert cl[0] > 12.0 and cl[0] > cl[-1]
  assert [g["scale"] for g in js["guidance_sweep"]] == [1.0, 2.5]
  bar = js["quality_bar"]
  assert len(bar) == 15 and all(isinstance(v["holds"], bool) for v in bar.values())
  assert sum(k.startswith("student:") for k in bar) == 4 and js["quality_bar_model"] == "student"
  assert sum(k.startswith("out of family") for k in bar) == 3
  assert any("miss rate" in k for k in bar) and any("SSIM" in k for k in bar)
  # the out-of-family split: 2 contexts x 4 families (+ the tracker control from the same contexts)
  o = js["out_of_family"]
  assert o["out_of_family"]["clips"] == 8 and o["families"]["tracker"]["clips"] == 2
  assert set(o["families"]) == {"hold", "alternate", "away", "noop", "tracker"}
  assert len(o["out_of_family"]["delta_psnr"]["per_horizon"]) == 3
  assert all(0 <= x <= 13 for x in o["out_of_family"]["ball_error"]["true"]["per_horizon"])
  assert len(js["ball_error"]["true"]["per_horizon"]) == 3
  assert len(os.listdir(os.path.join(rdir, "videos", "out_of_family"))) == 5
  assert "very_long" not in js["long_horizon"]          # the very long row is the final model's (the student's)
  st = js["student"]                                      # the few-step student on the same clips, beside the teacher
  assert st["ddim_steps"] == 1 and st["train_steps"] == 2
  assert len(st["evaluate"]["delta_psnr"]["per_horizon"]) == 3 and st["evaluate"]["delta_psnr"]["n"] == 3
  assert st["out_of_family"]["out_of_family"]["clips"] == 8
  assert st["long_horizon"]["frames"] == 8 and st["long_horizon"]["very_long"]["frames"] == 10
  assert set(st["frames_per_second"]) == {"teacher", "student"} and min(st["frames_per_second"].values()) > 0
  assert len(os.listdir(os.path.join(rdir, "videos", "student"))) == 2
  assert "Few-step student" in open(os.path.join(rdir, "metrics.md")).read()
  ct = st["catch_test"]                                   # the student's next frame where catch or miss is decided
  assert ct["events"] == ct["catches"] + ct["misses"] > 0 and ct["catches"] == ct["lag_catches"] + ct["other_catches"]
  assert sum(v["n"] for v in ct["by_configuration"].values()) == ct["events"]
  assert "Catch test" in open(os.path.join(rdir, "metrics.md")).read()
  assert "Out-of-family split" in open(os.path.join(rdir, "metrics.md")).read()
  assert "paired SE" in [v for k, v in bar.items() if "Delta-t-PSNR" in k][0]["detail"]
  dp = js["delta_psnr"]
  assert len(dp["per_horizon"]) == 3 and dp["n"] == 3 and dp["se"] >= 0
  assert len(js["paddle_error"]["true"]["per_horizon"]) == 3
  assert all(0 <= x <= 9 for x in js["paddle_error"]["shuffled"]["per_horizon"])
  assert all(g["delta_psnr"] is not None for g in js["guidance_sweep"])
  lh = js["long_horizon"]
  assert lh["frames"] == 8 and len(lh["per_horizon"]["world_model"]["psnr"]) == 8
  assert os.path.getsize(os.path.join(rdir, "plots", "long_horizon.png")) > 0
  pe = js["policy_eval"]
  assert pe["model"] == "student"                         # the run's final world model
  assert pe["policies"] == ["tracker", "random"] and pe["episodes_per_policy"] == 2
  assert all(pe["real"][p] >= 0.0 and pe["world_model"][p] >= 0.0 for p in pe["policies"])
  assert "mmrv" in pe and "pearson_r" in pe
  assert set(pe["miss_rate"]["real"]) == {"tracker", "random"} and pe["miss_rate"]["real"]["tracker"] == 0.0
  lo, hi = pe["bootstrap"]["mmrv"]
  assert 0.0 <= lo <= hi
  assert len(os.listdir(os.path.join(rdir, "videos", "policy_eval"))) == 2
  from vid2world_jax import video_io
  first = video_io.read_video(os.path.join(rdir, "videos", sorted(gifs)[0]))[0]
  assert first.shape[0] == 32 * 3   # upscaled by demo.video_scale
  assert m["timing"]["total"] > 0


def test_demo_stages_are_cached(demo_run, capsys):
  from vid2world_jax.demo import pipeline
  wd, m = demo_run
  before = os.path.getmtime(os.path.join(wd, "finetune", "output", "tree.json"))
  m2 = pipeline.run(demo_test_config(), wd)
  out = capsys.readouterr().out
  assert "stage (a) pretrain: cached" in out and "stage (b) finetune: cached" in out
  assert "eval/rollouts" in out and "eval/long_horizon" in out
  assert os.path.getmtime(os.path.join(wd, "finetune", "output", "tree.json")) == before
  assert m2["per_horizon"] == m["per_horizon"]


def test_demo_workdir_loads_in_the_session_and_the_rollout_cli(demo_run, tmp_path):
  """The default job's workdir is a usable model: no pickle anywhere in it, ``InferenceSession.load(workdir)``
  (config read from the checkpoint) and ``rollout_cli --checkpoint=<workdir>`` give the same frames for the
  same seed."""
  from vid2world_jax import inference
  wd, _ = demo_run
  files = [os.path.join(r, f) for r, _, fs in os.walk(wd) for f in fs]
  assert not [f for f in files if f.endswith((".pkl", ".pickle"))]
  # the workdir names its model (loading knows no demo layout)
  assert json.load(open(os.path.join(wd, "model.json"))) == {"checkpoint": "finetune"}
  sess = inference.InferenceSession.load(wd)
  assert sess.frame_shape == (32, 32, 3) and sess.action_dim == 3 and sess.context_frames == 1
  rng = np.random.default_rng(0)
  ctx = rng.integers(0, 256, size=(1, 1, 32, 32, 3)).astype(np.uint8)
  acts = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=5)]           # 5 generated frames > window 4
  want = sess.rollout(ctx, acts[None], guidance_scale=2.5, seed=3)
  np.savez(tmp_path / "ctx.npz", frames=ctx[0])
  np.save(tmp_path / "acts.npy", acts)
  r = _cli(["vid2world_jax.rollout_cli", f"--config={_tiny_config_file(tmp_path)}", f"--checkpoint={wd}",
            f"--context={tmp_path / 'ctx.npz'}", f"--actions={tmp_path / 'acts.npy'}", "--guidance=2.5", "--seed=3",
            f"--out={tmp_path / 'out.npz'}", "--noprogress"])
  assert r.returncode == 0, r.stderr[-3000:]
  with np.load(tmp_path / "out.npz") as z:
    frames = z["frames"]
  assert frames.shape == (1, 6, 32, 32, 3)
  np.testing.assert_array_equal(frames[:, 0], ctx[:, 0])
  np.testing.assert_array_equal(frames[:, 1:], want)


def test_demo_ablations_table(demo_run):
  from vid2world_jax.demo import ablations
  wd, _ = demo_run
  out = ablations.run_ablations(demo_test_config(), wd)
  names = [r["variant"] for r in out["rows"]]
  assert "copy-last-frame baseline" in names
  assert "from scratch (no pretraining)" in names
  assert "pretrained + mask" in names
  assert any("non-autoregressive" in n for n in names)
  assert any("shuffled actions" in n for n in names)
  assert any("no guidance" in n for n in names)
  assert "pretrained > from-scratch fine-tune (mean PSNR and SSIM)" in out["quality_bar"]
  text = open(os.path.join(wd, "report", "ablations.md")).read()
  assert "| from scratch (no pretraining) |" in text


def test_demo_transfer_params_real_unet():
  """The bidirectional VDM -> causal world model: temporal-conv kernels transferred, action encoder new."""
  from flax import nnx, traverse_util
  from vid2world_jax import world_model
  from vid2world_jax.conversion import init_from
  from vid2world_jax.conversion.dynamicrafter import is_temporal_conv_kernel
  from vid2world_jax.demo import pipeline, training
  from vid2world_jax.models import weight_transfer
  c = demo_test_config(arch="unet")
  mcfg = world_model.model_config(c)
  pre_cfg = pipeline.bidirectional_model_config(mcfg)
  assert pre_cfg.unet.action_dim == 0 and pre_cfg.unet.temporal_conv_padding == "symmetric"
  src, _ = world_model.build(pre_cfg, rngs=nnx.Rngs(1))
  dst, _ = world_model.build(mcfg, rngs=nnx.Rngs(2))
  src_p = training.to_numpy(nnx.to_pure_dict(nnx.state(src, nnx.Param)))
  dst_p = training.to_numpy(nnx.to_pure_dict(nnx.state(dst, nnx.Param)))
  new, rep = init_from.transfer_params(dst_p, src_p, "mixed")
  fs, fn, fd = (traverse_util.flatten_dict(x) for x in (src_p, new, dst_p))
  assert rep["transferred"] > 0 and rep["copied"] > 0
  assert any(n.startswith("unet.action_emb") for n in rep["new"])
  for path, w in fn.items():
    if path not in fs:
      np.testing.assert_array_equal(w, fd[path])     # fresh init kept
    elif is_temporal_conv_kernel(path):
      np.testing.assert_allclose(w, weight_transfer.transfer_kernel(fs[path], "mixed", axis=0), rtol=0, atol=0)
      assert np.all(w[0] == 0)                        # mixed: far-past tap is zero
    else:
      np.testing.assert_array_equal(w, fs[path])


def test_demo_copy_last_frame_baseline():
  from vid2world_jax.demo import baselines
  x = np.random.default_rng(0).uniform(size=(2, 5, 4, 4, 3)).astype(np.float32)
  y = baselines.copy_last_frame(x, 2)
  np.testing.assert_array_equal(y[:, :2], x[:, :2])
  np.testing.assert_array_equal(y[:, 4], x[:, 1])
  with pytest.raises(ValueError):
    baselines.copy_last_frame(x[0], 1)


def test_demo_report_side_by_side_and_gif(tmp_path):
  from vid2world_jax.demo import report
  a = np.zeros((3, 8, 8, 3), np.float32)
  b = np.ones((3, 8, 8, 3), np.float32)
  v = report.side_by_side([a, b], scale=2, gap=2)
  assert v.shape == (3, 16, 34, 3) and v.dtype == np.uint8
  assert v[0, 0, 0, 0] == 0 and v[0, 0, -1, 0] == 255
  p = report.write_gif(str(tmp_path / "x.gif"), v)   # identical consecutive frames stay separate frames
  from vid2world_jax import video_io
  assert len(video_io.read_video(p)) == 3


def test_demo_guidance_scale_one_is_no_guidance():
  """The guided prediction with a traced scale (as every rollout runs it) at s=1 returns the conditional
  prediction."""
  import jax
  import jax.numpy as jnp
  from vid2world_jax.inference import sampler as rl
  from vid2world_jax.inference import rollout_model
  import _rollout_helpers as h
  params = h.standin_params(action_dim=3)
  b, w = 2, 4
  rng = np.random.default_rng(0)
  inputs = rollout_model.WindowInputs(
      latents=jnp.asarray(rng.normal(size=(b, w) + h.LATENT), jnp.float32),
      t=jnp.full((b, w), 500, jnp.int32),
      cond={"concat": jnp.asarray(rng.normal(size=(b,) + h.LATENT), jnp.float32),
            "context": jnp.asarray(rng.normal(size=(b, 2, 8)), jnp.float32)},
      actions=jnp.asarray(rng.normal(size=(b, w, 3)), jnp.float32),
      action_mask=jnp.ones((b, w), jnp.float32), new_index=jnp.asarray(2, jnp.int32))
  den = rollout_model.FnDenoiser(h.standin_denoise)
  guided = jax.jit(lambda s: rl.guided_prediction(den, params, (), inputs, s, 0.7)[0])
  out1 = guided(jnp.float32(1.0))
  ref = h.standin_denoise(params, inputs.latents, inputs.t, inputs.cond, inputs.actions, inputs.action_mask)
  np.testing.assert_allclose(np.asarray(out1)[:, :3], np.asarray(ref)[:, :3], rtol=1e-6, atol=1e-6)
  out3 = guided(jnp.float32(3.0))
  assert float(jnp.max(jnp.abs(out3[:, 2] - ref[:, 2]))) > 1e-4   # the newest frame's action matters


# ---------------------------------------------------------------------------------------------------------------
# The README's command: `python -m vid2world_jax.train --config=configs/demo.py` dispatches to the demo pipeline.


def _cli(args, cwd=REPO, timeout=600):
  import subprocess
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _tiny_config_file(tmp_path):
  """A config file for the CLI: the shortened test config with job='demo'."""
  p = tmp_path / "tiny_demo_config.py"
  p.write_text(
      "import sys\n"
      f"sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]\n"
      "from test_demo import demo_test_config\n\n\n"
      "def get_config():\n"
      "  c = demo_test_config()\n"
      "  c.job = 'demo'\n"
      "  return c\n")
  return str(p)


def test_demo_config_job_dispatch_fields():
  from configs import base, demo
  from vid2world_jax.training import config as train_config
  from vid2world_jax.demo import pipeline
  c = demo.get_config()
  assert c.job == "demo" and train_config.config_job(c) == "demo"
  assert train_config.config_job(base.get_base_config()) == "train"      # no job field: the plain trainer
  # every knob of the demo is in the config file (so --config.demo.<knob>=... overrides it)
  assert set(c.demo.keys()) == set(pipeline.default_demo_config().keys())
  assert set(c.demo.policy_eval.keys()) == set(pipeline.default_demo_config().policy_eval.keys())
  c.job = "bogus"
  with pytest.raises(train_config.ConfigError, match="job must be one of"):
    train_config.config_job(c)


def test_demo_train_cli_dispatch(demo_run, tmp_path):
  """`python -m vid2world_jax.train --config=<demo config>` runs demo.pipeline.run with command-line overrides:
  stage (a) reused from a copied workdir, stage (b) re-run for the overridden number of steps, report written."""
  import shutil
  wd0, _ = demo_run
  wd = tmp_path / "wd"
  shutil.copytree(os.path.join(wd0, "pretrain"), wd / "pretrain")
  r = _cli(["vid2world_jax.train", f"--config={_tiny_config_file(tmp_path)}", f"--workdir={wd}",
            "--config.demo.finetune_steps=1", "--config.demo.policy_eval.enabled=False",
            "--config.demo.weight_transfer=shift"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "stage (a) pretrain: cached" in r.stdout
  assert "stage (b) finetune: cached" not in r.stdout
  with open(wd / "report" / "metrics.json") as f:
    js = json.load(f)
  assert js["setup"]["finetune_steps"] == 1 and js["setup"]["weight_transfer"] == "shift"
  assert "policy_eval" not in js
  assert os.path.getsize(wd / "report" / "plots" / "error_vs_horizon.png") > 0
  # a bad job is a one-line error before anything runs
  r = _cli(["vid2world_jax.train", f"--config={_tiny_config_file(tmp_path)}", f"--workdir={wd}",
            "--config.job=bogus"])
  assert r.returncode != 0 and "error: job must be one of" in r.stderr


def test_demo_ablations_cli(demo_run, tmp_path):
  """`python -m vid2world_jax.demo.ablations --config=... --workdir=...` prints and writes the table (every
  variant already cached by test_demo_ablations_table, which runs first in this file)."""
  wd, _ = demo_run
  r = _cli(["vid2world_jax.demo.ablations", f"--config={_tiny_config_file(tmp_path)}", f"--workdir={wd}"])
  assert r.returncode == 0, r.stderr[-3000:]
  assert "| copy-last-frame baseline |" in r.stdout and "## Quality bar" in r.stdout
  assert os.path.getsize(os.path.join(wd, "report", "ablations.md")) > 0


def test_demo_config_sequence_fields_overridable_on_cli():
  """Every sequence knob of configs/demo.py (guidance sweep, policies, transfers, init_fresh, mesh rules) is a
  tuple, so ``--config.x=...`` overrides work (ml_collections' flags do not override list fields)."""
  import subprocess
  prog = ("import json, sys; from absl import app; from ml_collections import config_flags; "
          "C = config_flags.DEFINE_config_file('config', None, 'cfg', lock_config=True); "
          "app.run(lambda _: print('CFG=' + json.dumps(C.value.to_dict())))")
  r = subprocess.run([sys.executable, "-c", prog, f"--config={os.path.join(REPO, 'configs', 'demo.py')}",
                      "--config.demo.guidance_sweep=(1.0,4.0)",
                      "--config.demo.policy_eval.policies=('expert','random')",
                      "--config.demo.ablations.transfers=('mask',)",
                      "--config.init_fresh=('action',)",
                      "--config.mesh.rules=(('unet/.*/kernel',(None,'fsdp')),)"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  c = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("CFG=")][0][4:])
  assert c["demo"]["guidance_sweep"] == [1.0, 4.0]
  assert c["demo"]["policy_eval"]["policies"] == ["expert", "random"]
  assert c["demo"]["ablations"]["transfers"] == ["mask"]
  assert c["init_fresh"] == ["action"]
  assert c["mesh"]["rules"] == [["unet/.*/kernel", [None, "fsdp"]]]


def test_demo_quality_bar_checks_by_hand():
  """Each point of the bar holds exactly when its numbers say so; unmeasured points never hold."""
  from vid2world_jax.demo import quality_bar as qb
  ph = {"world_model": {"psnr": [30.0, 29.0, 28.0], "ssim": [0.96, 0.92, 0.86]},
        "copy_last_frame": {"psnr": [31.0, 27.0, 25.0], "ssim": [0.95, 0.9, 0.85]}}
  ok = qb.check_copy_last(ph)
  assert list(ok.values())[0]["holds"]            # horizon 1 is not part of the check (from horizon 2 on)
  ph["world_model"]["psnr"][2] = 24.0
  assert not list(qb.check_copy_last(ph).values())[0]["holds"]
  assert list(ok.values())[1]["holds"]            # SSIM: every horizon, horizon 1 included
  ph["world_model"]["ssim"][0] = 0.94
  assert not list(qb.check_copy_last(ph).values())[1]["holds"]
  good = {"per_horizon": [4.5, 0.2], "se_per_horizon": [0.1, 0.1], "mean": 4.2, "se": 0.2, "n": 8}
  pos = {"true": {"mean": 0.4, "per_horizon": [0.3, 0.5]}, "shuffled": {"mean": 1.0, "per_horizon": [1, 1]}}
  assert all(v["holds"] for v in qb.check_action_following(good, pos).values())
  bad = dict(good, per_horizon=[2.5, -0.1])       # mean fine, one horizon negative
  pos_bad = {"true": {"mean": 0.6, "per_horizon": [0.6]}, "shuffled": {"mean": 1.0, "per_horizon": [1]}}
  assert not any(v["holds"] for v in qb.check_action_following(bad, pos_bad).values())
  assert not any(v["holds"] for v in qb.check_action_following(None, None).values())
  assert not list(qb.check_action_following(dict(good, mean=3.9), pos).values())[0]["holds"]   # in-dist >= 4 dB
  real, wm = dict(a=3, b=1, c=0.5, d=0.2, e=0.0, f=0.1), dict(a=2.6, b=1, c=0.4, d=0.3, e=0.2, f=0.1)
  pe = {"policies": list("abcdef"), "episodes_per_policy": 16, "pearson_r": 0.95, "mmrv": 0.05,
        "real": real, "world_model": wm,
        "miss_rate": {"real": dict(a=0, b=0.5, c=0.7, d=0.9, e=1, f=1), "world_model": dict(a=0, b=0.4, c=0.7, d=0.9,
                                                                                              e=0.9, f=0.95)},
        "bootstrap": {"level": 0.95, "pearson_r": [0.8, 0.99], "mmrv": [0.0, 0.1]}}
  assert all(v["holds"] for v in qb.check_policy_eval(pe).values())
  assert not list(qb.check_policy_eval(dict(pe, episodes_per_policy=8)).values())[0]["holds"]
  assert not list(qb.check_policy_eval(dict(pe, mmrv=0.2)).values())[0]["holds"]
  assert not list(qb.check_policy_eval(dict(pe, pearson_r=0.85)).values())[0]["holds"]
  assert not list(qb.check_policy_eval(None).values())[0]["holds"]
  over = qb.check_policy_eval(dict(pe, world_model=dict(wm, e=0.6)))          # random-like policy credited 0.6
  assert [v["holds"] for v in over.values()] == [True, False, True]
  missless = dict(pe, miss_rate={"real": pe["miss_rate"]["real"], "world_model": dict(pe["miss_rate"]["world_model"],
                                                                                         f=0.8)})
  assert [v["holds"] for v in qb.check_policy_eval(missless).values()] == [True, True, False]
  # the out-of-family split: Delta-t-PSNR, paddle error, ball error relative to the in-distribution clips'
  fam = {"delta_psnr": {"mean": 3.5, "se": 0.3, "n": 32, "per_horizon": [2.0, 4.0]},
         "paddle_error": {"true": {"mean": 0.1}, "other": {"mean": 2.0}}, "ball_error": {"true": {"mean": 0.3}}}
  ood = {"out_of_family": fam, "families": {"hold": fam}}
  in_ball = {"true": {"mean": 0.25}}
  assert all(v["holds"] for v in qb.check_out_of_family(ood, in_ball).values())
  worse = dict(fam, delta_psnr=dict(fam["delta_psnr"], per_horizon=[4.0, -0.5]), paddle_error={
      "true": {"mean": 0.3}, "other": {"mean": 2.0}}, ball_error={"true": {"mean": 0.4}})
  assert not any(v["holds"] for v in qb.check_out_of_family({"out_of_family": worse, "families": {}},
                                                            in_ball).values())
  assert not any(v["holds"] for v in qb.check_out_of_family(None, in_ball).values())
  lh = {"frames": 32, "clips": 4, "window": 8,
        "frame_statistics": {"max_rel_mean_dev": 0.05, "max_rel_std_dev": 0.08},
        "per_horizon": {"world_model": {"psnr": [20.0] * 4}, "copy_last_frame": {"psnr": [19.0] * 4}}}
  assert list(qb.check_long_horizon(lh).values())[0]["holds"]
  lh["frame_statistics"]["max_rel_std_dev"] = 0.2
  assert not list(qb.check_long_horizon(lh).values())[0]["holds"]
  assert len(qb.shortfalls(qb.check_long_horizon(lh))) == 1


def test_demo_strict_exits_nonzero_with_the_shortfalls(demo_run, capsys):
  """--config.demo.strict=True: the (cached) 2-step run cannot meet the bar -> exit status 3 after the table."""
  from vid2world_jax.demo import pipeline
  wd, _ = demo_run
  c = demo_test_config()
  c.demo.strict = True
  with pytest.raises(SystemExit) as e:
    pipeline.run(c, wd)
  assert e.value.code == 3
  assert "demo.strict: the quality bar was not met" in capsys.readouterr().out


def test_session_cached_rollout_matches_the_uncached_rollout():
  """The demo's sessions on the cached fast path give the frames of the full-window path, at scale 1 and 2.5,
  across a sliding window (the guidance scale is a traced value on both)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from vid2world_jax import world_model
  from vid2world_jax.demo import evaluation
  c = demo_test_config(arch="unet")
  mcfg = world_model.model_config(c)
  wm, _ = world_model.build(mcfg, rngs=nnx.Rngs(3))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(wm, nnx.Param)))
  cached = evaluation.make_session(c, params)        # "auto": a strictly causal UNet runs cached by default
  c.eval.cached_rollout = "off"
  plain = evaluation.make_session(c, params)
  assert cached.cached and not plain.cached
  rng = np.random.default_rng(0)
  ctx = plain.encode(rng.integers(0, 256, size=(2, 1, 32, 32, 3)).astype(np.uint8))
  acts = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(2, 6))]
  for scale in (1.0, 2.5):
    a = plain.latent_rollout(ctx, acts, guidance_scale=scale, seed=5, horizon=6)   # 7 frames > window 4: slides
    b = cached.latent_rollout(ctx, acts, guidance_scale=scale, seed=5, horizon=6)
    assert a.shape == b.shape == (2, 7) + ctx.shape[2:]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4, rtol=0)
    assert float(jnp.max(jnp.abs(a[:, 1:] - ctx))) > 1e-2   # it generated something


def test_shipped_pretrained_vdm_matches_the_default_config():
  """The shipped stage-(a) file loads for configs/demo.py (its model config is recorded and compared), every
  parameter of the bidirectional model is present with its shape, and a changed model config is refused."""
  import jax
  from flax import nnx, traverse_util
  from configs import demo
  from vid2world_jax import world_model
  from vid2world_jax.demo import pipeline, pretrained_asset, training
  cfg = pipeline.with_demo(demo.get_config())
  mcfg = world_model.model_config(training.pretrain_config(cfg))
  path = pretrained_asset.asset_path(cfg.demo.pretrain_asset)
  assert os.path.getsize(path) <= 20 * 2**20
  out = pretrained_asset.load(path, mcfg)
  assert out["steps"] >= 1000 and "export_pretrained" in out["command"]
  abs_wm, _ = nnx.eval_shape(lambda: world_model.build(mcfg, rngs=nnx.Rngs(0)))
  want = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(abs_wm, nnx.Param)))
  got = traverse_util.flatten_dict(out["params"])
  assert set(want) == set(got)          # the same paths, key types included (int block indices)
  assert all(got[k].shape == tuple(v.shape) for k, v in want.items())
  # the causal world model takes every parameter over (temporal convs by transfer); only the actions are new
  causal = training.causalize(cfg, out, init="pretrained", transfer="mixed")
  assert causal["transfer_report"]["transferred"] > 0
  assert all("action" in n for n in causal["transfer_report"]["new"])
  assert all(np.isfinite(v).all() for v in jax.tree.leaves(out["params"]))
  other = mcfg.copy_and_resolve_references()
  other.unet.model_channels = 48
  with pytest.raises(ValueError, match="another model config"):
    pretrained_asset.load(path, other)
  # execution-only knobs (remat, attention kernel, activation sharding) do not change what the weights mean
  runs_differently = mcfg.copy_and_resolve_references()
  runs_differently.unet.attention_impl, runs_differently.unet.remat_block = "chunked", "nothing_saveable"
  runs_differently.unet.activation_rules = (("batch", "data"),)
  assert set(pretrained_asset.load(path, runs_differently)["params"]) == set(out["params"])


def test_demo_student_loads_through_every_consumer(demo_run, tmp_path):
  """The student (``<workdir>/student``) is an ordinary checkpoint: the session, the rollout CLI, the gym env and
  play load it with its own sampler (1 DDIM step, no guidance pass), also when handed the teacher's config."""
  from vid2world_jax import inference
  from vid2world_jax.inference import envs
  from vid2world_jax.play import app
  wd, _ = demo_run
  sdir = os.path.join(wd, "student")
  for cfg in (None, demo_test_config()):
    sess = inference.InferenceSession.load(sdir, cfg)
    assert sess.sampler.ddim_steps == 1 and sess.sampler.guidance_scale is None and sess.guidance_scale == 1.0
  teacher = inference.InferenceSession.load(wd)
  assert teacher.sampler.ddim_steps == 2 and teacher.sampler.guidance_scale is not None
  rng = np.random.default_rng(1)
  ctx = rng.integers(0, 256, size=(1, 1, 32, 32, 3)).astype(np.uint8)
  acts = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=5)]
  want = sess.rollout(ctx, acts[None], guidance_scale=1.0, seed=3)
  np.savez(tmp_path / "ctx.npz", frames=ctx[0])
  np.save(tmp_path / "acts.npy", acts)
  r = _cli(["vid2world_jax.rollout_cli", f"--config={_tiny_config_file(tmp_path)}", f"--checkpoint={sdir}",
            f"--context={tmp_path / 'ctx.npz'}", f"--actions={tmp_path / 'acts.npy'}", "--seed=3",
            f"--out={tmp_path / 'out.npz'}", "--noprogress"])
  assert r.returncode == 0, r.stderr[-3000:]
  with np.load(tmp_path / "out.npz") as z:
    np.testing.assert_array_equal(z["frames"][:, 1:], want)
  env = envs.WorldModelEnv(sess, initial_contexts=ctx)
  obs, _ = env.reset(seed=0)
  obs2 = env.step(np.eye(3, dtype=np.float32)[1])[0]
  assert obs.shape == obs2.shape == (32, 32, 3) and obs2.dtype == np.uint8
  player = app.make_player(sess, demo_test_config(), out_dir=str(tmp_path / "rec"))
  assert player.guidance_scale == 1.0
  player.step(["ArrowLeft"])
