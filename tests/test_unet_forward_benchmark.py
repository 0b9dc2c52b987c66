"""Fast UNet construction under tracing (models/tracing.py, used by unet.build and benchmarks/unet_forward.py)."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax._src.interpreters import partial_eval as pe

from configs import base
from vid2world_jax.models import tracing, unet


def _tiny():
  return base.tiny_unet_config(channels=32, frames=4, action_dim=2)


def test_unet_forward_cheap_tracer_errors_restores_jax_on_exit_and_error():
  original = pe.DynamicJaxprTracer._origin_msg
  with tracing.cheap_tracer_errors():
    assert pe.DynamicJaxprTracer._origin_msg is not original
    with tracing.cheap_tracer_errors():  # nested use keeps the patch until the outer block ends
      pass
    assert pe.DynamicJaxprTracer._origin_msg is not original
  assert pe.DynamicJaxprTracer._origin_msg is original
  with pytest.raises(RuntimeError):
    with tracing.cheap_tracer_errors():
      raise RuntimeError("boom")
  assert pe.DynamicJaxprTracer._origin_msg is original


def test_unet_forward_cheap_tracer_errors_keeps_attribute_error_semantics():
  def f(x):
    with tracing.cheap_tracer_errors():
      assert getattr(x, "sharding", None) is None  # still an AttributeError, so getattr's default is used
      with pytest.raises(AttributeError):
        x.sharding  # noqa: B018
    return x
  jax.jit(f)(np.ones(3, np.float32))


def test_unet_forward_build_under_eval_shape_never_walks_the_jaxpr(monkeypatch):
  calls = []
  orig = pe.JaxprStackFrame.find_progenitors

  def spy(self, tracer):
    calls.append(1)
    return orig(self, tracer)

  monkeypatch.setattr(pe.JaxprStackFrame, "find_progenitors", spy)
  cfg = _tiny()
  abstract = nnx.eval_shape(lambda: unet.build(cfg, rngs=nnx.Rngs(0)))
  assert calls == [], f"{len(calls)} O(#equations) progenitor walks during construction"
  # without the context manager the same construction does walk the jaxpr once per RNG draw (the quadratic cost)
  nnx.eval_shape(lambda: unet.UNet(cfg, rngs=nnx.Rngs(0)))
  assert len(calls) > 10
  assert len(jax.tree.leaves(nnx.state(abstract, nnx.Param))) > 50


def test_unet_forward_build_values_and_paths_unchanged():
  cfg = _tiny()
  fast = nnx.state(unet.build(cfg, rngs=nnx.Rngs(3)), nnx.Param)
  plain = nnx.state(unet.UNet(cfg, rngs=nnx.Rngs(3)), nnx.Param)
  fast_flat, plain_flat = dict(nnx.to_flat_state(fast)), dict(nnx.to_flat_state(plain))
  assert fast_flat.keys() == plain_flat.keys()
  for k in fast_flat:
    np.testing.assert_array_equal(np.asarray(fast_flat[k][...]), np.asarray(plain_flat[k][...]), err_msg=str(k))


def test_unet_forward_benchmark_fast_random_state_is_a_usable_model():
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "unet_forward.py")
  spec = importlib.util.spec_from_file_location("unet_forward_bench", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  cfg = _tiny()
  cfg.dropout = 0.1  # Dropout slots carry RNG state: keys must be real keys
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: unet.build(cfg, rngs=nnx.Rngs(0))))
  state = bench.fast_random_state(abstract, 0)
  kernels = {k: v for k, v in nnx.to_flat_state(state) if k[-1] == "kernel"}
  assert len(kernels) > 20
  for k, v in kernels.items():
    fan_in = int(np.prod(v.shape[:-1]))
    assert abs(float(np.std(np.asarray(v[...]))) * fan_in ** 0.5 - 1.0) < 0.3, k
  model = nnx.merge(graphdef, state)
  model.eval()
  x = np.ones((1, 4, 8, 8, cfg.in_channels), np.float32)
  y = model(x, np.array([500]), np.ones((1, 3, cfg.context_dim), np.float32), actions=np.zeros((1, 4, 2), np.float32))
  assert y.shape == (1, 4, 8, 8, cfg.out_channels) and bool(np.isfinite(np.asarray(y)).all())


def _bench_module():
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "unet_forward.py")
  spec = importlib.util.spec_from_file_location("unet_forward_bench2", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  return bench


def _args(**kw):
  import argparse
  import sys
  base = dict(variant="256", batch=1, frames=16, latent=32, repeats=2, torch_src="", torch_python=sys.executable,
              torch_script="", torch_threads=2)
  base.update(kw)
  return argparse.Namespace(**base)


def test_unet_forward_torch_reference_side_by_side_parses_the_child_run(tmp_path):
  """The PyTorch side runs torch_reference.py --timing in a child process and reads its timing JSON (a stand-in
  script here: the real one needs the DynamiCrafter tree and minutes)."""
  bench = _bench_module()
  dc = tmp_path / "dc"
  (dc / "configs").mkdir(parents=True)
  (dc / "configs" / "inference_256_v1.0.yaml").write_text("model: {}\n")
  script = tmp_path / "torch_reference.py"
  script.write_text(
      "import argparse, json\n"
      "p = argparse.ArgumentParser(); p.add_argument('--src'); p.add_argument('--variant'); "
      "p.add_argument('--timing', action='store_true'); p.add_argument('--threads', type=int); "
      "p.add_argument('--repeats', type=int); p.add_argument('--timing-json')\n"
      "a = p.parse_args(); assert a.timing and a.variant == 'none'\n"
      "json.dump({'torch': 'x', 'threads': a.threads, 'build_s': 1.0, 'forward_s_first': 9.0,\n"
      "           'forward_s_rest': [3.0 + i for i in range(a.repeats)]}, open(a.timing_json, 'w'))\n")
  res = bench.torch_reference_timing(_args(torch_src=str(dc), torch_script=str(script)))
  assert res["forward_s"] == [3.0, 4.0] and res["forward_first_s"] == 9.0 and res["threads"] == 2


def test_unet_forward_torch_reference_unavailable_is_one_reason(tmp_path):
  bench = _bench_module()
  res = bench.torch_reference_timing(_args(torch_src=str(tmp_path)))
  assert "not a DynamiCrafter tree" in res["unavailable"] or "no " in res["unavailable"]
  res = bench.torch_reference_timing(_args(torch_src=str(tmp_path), latent=16))
  assert res == {"unavailable": "the PyTorch reference times the 256 config at B1 T16 32x32 only"}
