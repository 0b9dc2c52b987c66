"""benchmarks/accelerator_check.sh: runs on the lent machine's own jax without grain or ml_collections (the
latter travels as a wheel), in a tiny CPU mode here; every phase has a timeout and the JSON line is always last."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from _train_helpers import REPO

# sitecustomize for the child processes: grain is absent, ml_collections only importable from a .whl on sys.path
# (as on the lent machine, where the .sh puts benchmarks/wheels/ml_collections-*.whl on PYTHONPATH).
BLOCKER = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys
    class _Lent(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top == "grain":
          raise ImportError("grain is not installed on the lent machine")
        if name == "ml_collections":
          wheels = [p for p in sys.path if p.endswith(".whl")]
          spec = importlib.machinery.PathFinder.find_spec(name, wheels) if wheels else None
          if spec is None:
            raise ImportError("ml_collections is not installed on the lent machine")
          return spec
        return None
    sys.meta_path.insert(0, _Lent())
""")


def _env(tmp_path):
  site = tmp_path / "site"
  site.mkdir(exist_ok=True)
  (site / "sitecustomize.py").write_text(BLOCKER)
  env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS="cpu", PYTHONPATH=str(site))
  env.pop("XLA_FLAGS", None)
  return env


def _run_sh(args, env, timeout):
  r = subprocess.run(["bash", "benchmarks/accelerator_check.sh", *args], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=timeout)
  lines = [l for l in r.stdout.strip().splitlines() if l.strip()]
  return r, json.loads(lines[-1])


def test_accelerator_check_imports_without_grain_or_ml_collections(tmp_path):
  """What the check imports works with grain blocked and ml_collections only from the shipped wheel."""
  env = _env(tmp_path)
  code = ("import sys; import vid2world_jax.train, vid2world_jax.inference.sampler, vid2world_jax.logging_utils; "
          "from configs import rt1, test_tiny; rt1.get_config('512'); test_tiny.get_config('vae'); "
          "import ml_collections; assert ml_collections.__file__.split('/ml_collections/')[0].endswith('.whl'); "
          "assert not [m for m in sys.modules if m.startswith('grain')]; print('ok')")
  blocked = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)
  assert blocked.returncode != 0 and "ml_collections is not installed" in blocked.stderr  # the blocker works
  wheel = [f for f in os.listdir(os.path.join(REPO, "benchmarks", "wheels")) if f.startswith("ml_collections")]
  assert len(wheel) == 1
  env["PYTHONPATH"] += os.pathsep + os.path.join(REPO, "benchmarks", "wheels", wheel[0])
  r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_accelerator_check_timeouts_give_partial_json(tmp_path):
  """A phase past its timeout is reported in the last JSON line (ok false, exit code 1), never a traceback."""
  r, res = _run_sh(["--mode=tiny", "--timeouts=train=2,sampler=2"], _env(tmp_path), timeout=120)
  assert r.returncode == 1
  assert res["ok"] is False and res["mode"] == "tiny"
  assert res["errors"] == {"train": "timeout after 2 s", "sampler": "timeout after 2 s"}


@pytest.mark.slow   # two phases, each builds and compiles a tiny model: ~2 min on 2 cores (6 when shared)
def test_accelerator_check_tiny_cpu_run(tmp_path):
  r, res = _run_sh(["--mode=tiny"], _env(tmp_path), timeout=900)
  assert r.returncode == 0 and res["ok"], (res, r.stderr[-3000:])
  assert res["errors"] == {}
  t = res["train"]
  assert t["stage"] == "done" and t["latents"] and t["loss_finite"] and t["step_s"] > 0 and t["flops_per_step"] > 0
  assert len(t["step_times_s"]) == 3
  s = res["sampler"]
  for k in ("uncached", "cached", "student"):
    assert s[k]["finite"] and s[k]["s_per_frame"] > 0 and s[k]["rollout_s"] > 0
  assert s["ddim_steps"] == 2 and s["horizon"] == 2
  assert (s["cached"]["ddim_steps"], s["cached"]["guidance"]) == (2, True)
  assert (s["student"]["ddim_steps"], s["student"]["guidance"]) == (1, False)
  assert "student 1 step, no guidance, cached" in r.stdout
  text = r.stdout.strip().splitlines()
  assert text[-2].startswith("sampler: ") and text[0].startswith("train: running")
