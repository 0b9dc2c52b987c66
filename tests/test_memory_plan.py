"""benchmarks/memory_plan.py on a tiny config: the CPU target (8 fake devices) compiles the latent-input and
the in-step-encoding train steps and reports per-device memory and FLOPs; the TPU target runs when libtpu is
installed (a separate venv, see docs/memory_plan.md)."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli():
  spec = importlib.util.spec_from_file_location("memory_plan_cli", os.path.join(REPO, "benchmarks", "memory_plan.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _run(capsys, *args, config="configs/test_tiny.py:tiny"):
  _cli().main([f"--config={config}", *args])
  lines = capsys.readouterr().out.strip().splitlines()
  return lines, json.loads(lines[-1])


def test_memory_plan_cpu_target_tiny(capsys):
  lines, out = _run(capsys, "--target=cpu", "--devices=8", "--mesh=data=2,fsdp=4", "--micro_batch=1")
  r = out["memory_plan"]["tiny"]
  assert out["target"] == "cpu" and out["peak_gib"]["tiny"] == r["peak_gib"]
  assert r["mesh"] == {"data": 2, "fsdp": 4} and r["grad_accum"] == 1 and r["micro_batch"] == 1
  assert r["kind"] == "latents" and r["trainable_params"] > 100_000
  assert 0 < r["arguments_gib"] < r["peak_gib"] and r["temporaries_gib"] > 0
  assert r["flops_per_device"] > 1e6
  assert any("per device: peak" in line for line in lines)


def test_memory_plan_cpu_levers_change_the_plan(capsys):
  """Tiny VAE + CLIP config: the in-step-encoder step holds the frozen encoders (more arguments, more FLOPs)
  than the precomputed-latents step; remat costs recompute FLOPs."""
  args = ("--target=cpu", "--devices=4", "--mesh=data=1,fsdp=4")
  _, lat = _run(capsys, *args, config="configs/test_tiny.py:vae")
  _, full = _run(capsys, *args, "--step=full", config="configs/test_tiny.py:vae")
  _, rem = _run(capsys, *args, "--override", "remat_policy.block=nothing_saveable", config="configs/test_tiny.py:vae")
  b, f, r = (x["memory_plan"]["vae"] for x in (lat, full, rem))
  assert f["kind"] == "full" and b["kind"] == "latents" and f["trainable_params"] == b["trainable_params"]
  assert f["arguments_gib"] > b["arguments_gib"] and f["flops_per_device"] > b["flops_per_device"]
  assert r["remat"]["block"] == "nothing_saveable"
  assert r["flops_per_device"] > b["flops_per_device"]          # recompute costs FLOPs


def test_memory_plan_tpu_target_tiny(capsys):
  try:
    import libtpu  # noqa: F401
  except ImportError:
    pytest.skip("libtpu not installed (TPU AOT needs jax[tpu] in its own venv, docs/memory_plan.md)")
  _, out = _run(capsys, "--target=v5e:2x2", "--mesh=data=1,fsdp=4")
  assert out["memory_plan"]["tiny"]["peak_gib"] > 0


def test_memory_plan_v4_target_is_megacore():
  """v4 slices run in megacore mode (one 32 GiB device per chip): the plan's v4 devices must be chips, not the
  16 GiB TensorCores the bare topology exposes."""
  try:
    import libtpu  # noqa: F401
  except ImportError:
    pytest.skip("libtpu not installed (TPU AOT needs jax[tpu] in its own venv, docs/memory_plan.md)")
  from vid2world_jax.training import memory_plan
  devices = memory_plan.target_devices("v4:2x2x2")
  assert len(devices) == 8 and all(d.num_cores == 2 for d in devices)


def test_memory_plan_depth_extrapolation_cpu_tiny(capsys):
  """``--reduce`` compiles a depth-reduced model and adds the full model's deltas: the argument delta (train state
  at the step's shardings, from abstract shapes) equals what the compiler reports for the two compiled sizes."""
  args = ("--target=cpu", "--devices=4", "--mesh=data=1,fsdp=4", "--micro_batch=1")
  lines, red = _run(capsys, *args, "--reduce", "model.unet.channel_mult=[1]")
  _, full = _run(capsys, *args)
  r, f = red["memory_plan"]["tiny"], full["memory_plan"]["tiny"]
  delta = r["extrapolated_full"]["delta"]
  assert r["reduced_by"] == ["model.unet.channel_mult=[1]"] and r["trainable_params"] < f["trainable_params"]
  assert abs(delta["arguments_gib"] - (f["arguments_gib"] - r["arguments_gib"])) < 1e-6
  assert delta["param_temporaries_gib"] > 0 and delta["residuals_gib"] > 0
  assert red["extrapolated_full_peak_gib"]["tiny"] == r["peak_gib"] + sum(delta.values())
  assert any("full depth, extrapolated" in line for line in lines)
