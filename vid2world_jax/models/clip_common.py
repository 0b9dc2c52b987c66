"""OpenCLIP transformer pieces shared by the text tower (``clip_text``) and the image tower (``clip_image``).

Mirrors ``open_clip.transformer`` (open_clip 2.22.0) as DynamiCrafter uses it:

* ``ResidualAttentionBlock``: pre-LN, ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``; LayerNorm eps 1e-5,
  no layer-scale, exact (erf) GELU.
* ``attn`` is ``torch.nn.MultiheadAttention``: one stacked input projection ``in_proj_weight [3W, W]``
  (q, k, v in that order along dim 0) with ``in_proj_bias [3W]``, and ``out_proj`` (Linear W->W). Scores are
  scaled by ``1/sqrt(W/heads)``. An optional additive ``[L, L]`` mask (``-inf`` where masked) is added to
  the scores before the softmax.
* ``mlp`` is ``Sequential(c_fc, gelu, c_proj)`` with named children (keys ``mlp.c_fc.*``, ``mlp.c_proj.*``).

Layout: activations are ``[B, L, W]`` (batch first; open_clip works in ``[L, B, W]`` internally, which is
only a transpose). Parameter paths mirror the torch keys; :func:`attention_entries` adds the two
``in_proj_*`` entries that :func:`vid2world_jax.models.torch_names.auto_entries` cannot infer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vid2world_jax.models import torch_names
from vid2world_jax.models import layers


def causal_mask(length: int) -> jax.Array:
  """Additive ``[length, length]`` float32 mask: 0 on/below the diagonal, ``-inf`` above (open_clip's)."""
  m = np.triu(np.full((length, length), -np.inf, np.float32), k=1)
  return jnp.asarray(m)


class MultiheadAttention(nnx.Module):
  """``torch.nn.MultiheadAttention(W, heads)`` self-attention (batch first, ``need_weights=False``).

  Parameters: ``in_proj_weight`` stored Flax-style ``[W, 3W]`` (= torch ``[3W, W]`` transposed; columns
  ``0:W`` are q, ``W:2W`` k, ``2W:3W`` v), ``in_proj_bias [3W]``, ``out_proj`` (nnx.Linear).
  """

  def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f"MultiheadAttention: width {width} not divisible by heads {heads}")
    self.width, self.heads = width, heads
    init = nnx.initializers.xavier_uniform()
    self.in_proj_weight = nnx.Param(init(rngs.params(), (width, 3 * width), jnp.float32))
    self.in_proj_bias = nnx.Param(jnp.zeros((3 * width,), jnp.float32))
    self.out_proj = nnx.Linear(width, width, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``x``: ``[B, L, W]``; ``mask``: additive ``[L, L]`` or None. Returns ``[B, L, W]``."""
    if x.ndim != 3 or x.shape[-1] != self.width:
      raise ValueError(f"MultiheadAttention expects [B, L, {self.width}], got {x.shape}")
    b, l, w = x.shape
    h = self.heads
    d = w // h
    qkv = x @ self.in_proj_weight[...] + self.in_proj_bias[...]
    q, k, v = jnp.split(qkv, 3, axis=-1)
    q, k, v = (t.reshape(b, l, h, d) for t in (q, k, v))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (1.0 / np.sqrt(d))
    if mask is not None:
      if mask.shape != (l, l):
        raise ValueError(f"attention mask must be [{l}, {l}], got {mask.shape}")
      scores = scores + mask.astype(scores.dtype)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, w)
    return self.out_proj(out)


class Mlp(nnx.Module):
  """``Sequential(OrderedDict(c_fc=Linear(W, R*W), gelu=GELU(), c_proj=Linear(R*W, W)))``."""

  def __init__(self, width: int, hidden: int, *, rngs: nnx.Rngs):
    self.c_fc = nnx.Linear(width, hidden, rngs=rngs)
    self.gelu = layers.GELU()
    self.c_proj = nnx.Linear(hidden, width, rngs=rngs)

  def __call__(self, x):
    return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
  """open_clip ``ResidualAttentionBlock`` (pre-LN, no layer-scale, no cross-attention)."""

  def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, ln_eps: float = 1e-5, *,
               rngs: nnx.Rngs):
    self.ln_1 = layers.LayerNorm(width, eps=ln_eps, rngs=rngs)
    self.attn = MultiheadAttention(width, heads, rngs=rngs)
    self.ln_2 = layers.LayerNorm(width, eps=ln_eps, rngs=rngs)
    self.mlp = Mlp(width, int(width * mlp_ratio), rngs=rngs)

  def __call__(self, x, mask=None):
    x = x + self.attn(self.ln_1(x), mask)
    return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
  """open_clip ``Transformer``: ``resblocks`` (nnx.List, index i == torch ``resblocks.{i}``)."""

  def __init__(self, width: int, layers_: int, heads: int, mlp_ratio: float = 4.0, ln_eps: float = 1e-5,
               *, rngs: nnx.Rngs):
    self.resblocks = nnx.List([ResidualAttentionBlock(width, heads, mlp_ratio, ln_eps, rngs=rngs)
                               for _ in range(layers_)])

  def __call__(self, x, mask=None, *, num_blocks: int | None = None, intermediates: dict | None = None,
               name: str = "resblocks"):
    """Runs blocks ``0 .. num_blocks-1`` (all by default). ``intermediates``: filled with each block output
    under ``"{name}.{i}/out"`` when a dict is given (eager debugging/parity use)."""
    n = len(self.resblocks) if num_blocks is None else num_blocks
    if not 0 <= n <= len(self.resblocks):
      raise ValueError(f"num_blocks {n} outside [0, {len(self.resblocks)}]")
    for i in range(n):
      x = self.resblocks[i](x, mask)
      if intermediates is not None:
        intermediates[f"{name}.{i}/out"] = x
    return x


def attention_entries(module: nnx.Module, prefix: str) -> list[torch_names.Entry]:
  """Conversion entries for every :class:`MultiheadAttention` ``in_proj_*`` inside ``module``."""
  out = []
  for path, m in nnx.iter_graph(module):
    if isinstance(m, MultiheadAttention):
      path = tuple(path)
      base = prefix + torch_names.torch_name(path)
      out.append(torch_names.Entry(base + ".in_proj_weight", path + ("in_proj_weight",), "linear"))
      out.append(torch_names.Entry(base + ".in_proj_bias", path + ("in_proj_bias",)))
  return out
