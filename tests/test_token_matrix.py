"""Per-token layers on the [tokens, C] matrix (models/layers.as_matrix): the same numbers as flax's own layers on
[..., C] inputs, and on CPU a backward whose bias sums XLA does not split into a reduce-window (docs/profile.md)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vid2world_jax.models import attention as A
from vid2world_jax.models import layers as L

X_SHAPE = (1, 512, 16, 8)   # [B, HW, T, C]: the temporal transformer's token layout, 8,192 tokens


def _grads(module, x):
  graph, state = nnx.split(module)
  loss = lambda s, x: (nnx.merge(graph, s)(x) ** 2).mean()
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), state


@pytest.mark.parametrize("kind", ["linear", "layernorm"])
def test_token_matrix_layers_match_flax_layers(kind):
  """Output and every gradient of ``layers.Linear`` / ``layers.LayerNorm`` on a 4-D input equal flax's."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5, 8)), jnp.float32)
  if kind == "linear":
    ours, theirs = L.Linear(8, 6, rngs=nnx.Rngs(0)), nnx.Linear(8, 6, rngs=nnx.Rngs(0))
  else:
    ours, theirs = L.LayerNorm(8, rngs=nnx.Rngs(0)), nnx.LayerNorm(8, epsilon=1e-5, rngs=nnx.Rngs(0))
    for m in (ours, theirs):   # not the identity init, so the scale / bias gradients are not trivial
      m.scale[...] = jnp.linspace(0.5, 1.5, 8)
      m.bias[...] = jnp.linspace(-0.2, 0.3, 8)
  (la, (ga, gxa)), (lb, (gb, gxb)) = (f(s, x) for f, s in (_grads(ours, x), _grads(theirs, x)))
  np.testing.assert_allclose(float(la), float(lb), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(gxa), np.asarray(gxb), rtol=1e-5, atol=1e-7)
  for (pa, a), (pb, b) in zip(sorted(nnx.to_flat_state(ga)), sorted(nnx.to_flat_state(gb))):
    assert pa == pb
    np.testing.assert_allclose(np.asarray(a[...]), np.asarray(b[...]), rtol=1e-5, atol=1e-7)


_WINDOWS = """
import json, re, sys
import jax, jax.numpy as jnp
from flax import nnx
from vid2world_jax.models import attention as A, layers as L

def old_geglu(p, x):   # the GEGLU as it was: flax's Linear on the [B, HW, T, C] array itself
  n = p.kernel.shape[1] // 2
  v = x @ p.kernel[...][:, :n] + p.bias[...][:n]
  g = x @ p.kernel[...][:, n:] + p.bias[...][n:]
  return v * L.gelu(g)

def multi_axis_windows(fn, module, x):
  graph, state = nnx.split(module)
  w = jnp.linspace(-1.0, 1.0, x.size // x.shape[-1] * 32).reshape(x.shape[:-1] + (32,))
  loss = lambda s: jnp.vdot(fn(nnx.merge(graph, s), x), w)   # the backward starts from w: no reduction of its own
  text = jax.jit(jax.grad(loss)).lower(state).compile().as_text()
  sizes = re.findall(r"reduce-window\\(.*?window=\\{size=([0-9x]+)", text)
  return sum(sum(int(n) > 1 for n in s.split("x")) > 1 for s in sizes)

x = jnp.ones(%r, jnp.float32)
geglu = A.GEGLU(8, 32, dtype=jnp.float32, rngs=nnx.Rngs(0))
print(json.dumps({"ours": multi_axis_windows(lambda m, x: m(x), geglu, x),
                  "old": multi_axis_windows(lambda m, x: old_geglu(m.proj, x), geglu, x)}))
"""


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA's CPU backend is the one that splits reductions")
def test_geglu_backward_has_no_multi_axis_reduce_window_on_cpu():
  """Compiled with the CPU setting (YNNPACK fusions off: XLA's own reductions), the GEGLU's backward on [B, HW, T,
  C] tokens has no reduce-window spanning several axes (the slow kind); the GEGLU written as before, on the 4-D
  array, has its two (else this test no longer tests anything: XLA changed). In a child process: XLA_FLAGS are
  read once per process."""
  env = dict(os.environ, XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _WINDOWS % (X_SHAPE,)], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  counts = json.loads(out.stdout.strip().splitlines()[-1])
  assert counts["old"] >= 2, f"the control lost its meaning: {counts}"
  assert counts["ours"] == 0, counts
