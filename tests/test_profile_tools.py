"""The profile tables' op kinds (benchmarks/op_kinds.py): compiled HLO instructions and torch.profiler names
map to the kinds they run; the profiler's events carry the instruction names the table is keyed on."""

import glob
import gzip
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import host_info  # noqa: E402
import op_kinds  # noqa: E402


def _compiled(fn, *args):
  return jax.jit(fn).lower(*args).compile()


def test_hlo_kinds_name_convolutions_matmuls_softmax_and_norms():
  x = jnp.ones((2, 8, 8, 4))
  w = jnp.ones((3, 3, 4, 4))
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  kinds = {k for k, _ in op_kinds.hlo_kinds(_compiled(conv, x, w).as_text()).values()}
  assert "convolution" in kinds
  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  kinds = {k for k, _ in op_kinds.hlo_kinds(_compiled(lambda a, b: a @ b, a, b).as_text()).values()}
  assert "linear matmul" in kinds and "attention matmul" not in kinds
  q = jnp.ones((2, 4, 16, 8))
  attn = lambda q: jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, q), -1), q)
  kinds = {k for k, _ in op_kinds.hlo_kinds(_compiled(attn, q).as_text()).values()}
  assert "attention matmul" in kinds and "linear matmul" not in kinds
  norm = lambda x: (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
  kinds = {k for k, _ in op_kinds.hlo_kinds(_compiled(norm, jnp.ones((64, 128))).as_text()).values()}
  assert "normalisation" in kinds and not kinds & {"convolution", "linear matmul", "attention matmul"}
  kinds = {k for k, _ in op_kinds.hlo_kinds(_compiled(lambda x: x.T.copy(), jnp.ones((64, 32))).as_text()).values()}
  assert kinds <= {"layout / copy", "other"}


def test_profiler_events_are_keyed_by_hlo_instruction_names(tmp_path):
  """The CPU runtime's trace events name executed instructions of the compiled module (what profile_unet.py sums):
  a matmul-heavy function's traced op time lands almost all on known instructions, most of it on matmuls."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((512, 512), dtype=np.float32))
  f = _compiled(lambda a: jnp.tanh(a @ a) @ a, a)
  kinds = op_kinds.hlo_kinds(f.as_text())
  f(a).block_until_ready()
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    for _ in range(3):
      f(a).block_until_ready()
  path = glob.glob(str(tmp_path / "**" / "*.trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as fh:
    events = json.load(fh)["traceEvents"]
  named = [(e["name"], e["dur"]) for e in events if e.get("ph") == "X" and e.get("name") in kinds]
  assert named, "no trace event carries an HLO instruction name"
  by_kind = op_kinds.sum_by(named, lambda n: kinds[n][0])
  assert max(by_kind, key=by_kind.get) == "linear matmul", by_kind


def test_torch_kinds():
  expect = {"aten::mkldnn_convolution": "convolution", "aten::slow_conv3d_forward": "convolution",
            "aten::addmm": "linear matmul", "aten::mm": "linear matmul", "aten::bmm": "attention matmul",
            "aten::_softmax": "softmax", "aten::native_group_norm": "normalisation", "aten::gelu": "activation",
            "aten::copy_": "layout / copy", "aten::mul": "elementwise", "cudaLaunch": "other",
            # the backward's ops (benchmarks/train_step.py --profile)
            "aten::convolution_backward": "convolution", "aten::native_group_norm_backward": "normalisation",
            "aten::gelu_backward": "activation", "aten::_softmax_backward_data": "softmax"}
  assert {n: op_kinds.torch_kind(n) for n in expect} == expect
  rows = op_kinds.table({"convolution": 3.0, "elementwise": 1.0})
  assert [r[0] for r in rows] == ["convolution", "elementwise"] and np.isclose(rows[0][2], 0.75)


def test_jax_trace_of_a_gradient_step_and_the_side_by_side_table(capsys):
  """profile_unet.jax_trace (what train_step.py --profile runs on the UNet's step) on a small conv + dense
  gradient step: its op time lands on convolutions and linear matmuls; print_tables prints both sides by kind
  and puts the per-kind seconds and the wall ratio in the JSON dict."""
  import profile_unet  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 16, 16, 32), dtype=np.float32))
  params = {"w": jnp.asarray(rng.standard_normal((3, 3, 32, 32), dtype=np.float32)) * 0.1,
            "d": jnp.asarray(rng.standard_normal((32, 256), dtype=np.float32)) * 0.1}

  def loss(p):
    h = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.mean(jnp.tanh(h) @ p["d"])

  step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(loss)(p)))
  compiled = step.lower(params).compile()
  run = lambda: jax.block_until_ready(compiled(params))
  run()
  r = profile_unet.jax_trace(compiled.as_text(), run, 2)
  by_kind = op_kinds.sum_by(r["ops"].items(), lambda n: r["kinds"][n])
  assert by_kind.get("convolution", 0) > 0 and by_kind.get("linear matmul", 0) > 0, by_kind
  res = {}
  fake_torch = {"wall_s": [2 * sum(r["ops"].values())], "ops": {"aten::convolution_backward": 1.0, "aten::mm": 0.5}}
  profile_unet.print_tables({"torch": fake_torch, "jax": {"wall_s": [sum(r["ops"].values())], **r}}, res, 3,
                            "train step")
  out = capsys.readouterr().out
  assert "jax: train step wall" in out and "train step wall, fastest:" in out, out
  assert res["torch_kinds_s"] == {"convolution": 1.0, "linear matmul": 0.5}
  assert np.isclose(res["jax_over_torch_wall"], 0.5, atol=1e-3), res


def test_cpu_description_names_the_first_processor_and_avx512(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 26\nmodel\t\t: 2\n"
                  "flags\t\t: fpu sse avx2 avx512f avx512bw\n\nprocessor\t: 1\nmodel name\t: other\n")
  text = host_info.cpu_description(str(info))
  assert text.startswith("AMD EPYC, family 26 model 2, ") and text.endswith("AVX-512 yes"), text
  info.write_text("model name\t: Some CPU\ncpu family\t: 6\nmodel\t\t: 85\nflags\t\t: fpu avx2 avx512_bf16\n")
  assert host_info.cpu_description(str(info)).endswith("AVX-512 no")   # avx512_bf16 alone is not avx512f
