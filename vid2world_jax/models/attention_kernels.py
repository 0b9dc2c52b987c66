"""Backend kernels behind :func:`vid2world_jax.models.attention.attention` (pure functions, no parameters).

Every kernel takes ``q [B, Lq, h, d]``, ``k, v [B, Lk, h, d]`` (one flat batch axis; the dispatcher folds and
broadcasts leading axes), a softmax ``scale`` and ``causal`` (query i sees keys j <= i, needs Lq == Lk), and
returns ``[B, Lq, h, d]`` in ``v.dtype``. Logits and softmax run in float32 in every kernel.

* :func:`chunked_attention`: memory-linear XLA attention: ``lax.map`` over query blocks, each against the
  full K/V, so only ``[B, h, block, Lk]`` logits live at a time; each block is checkpointed, so the backward
  pass recomputes them too instead of storing all blocks' probabilities.
* :func:`splash_attention`: the Pallas TPU splash-attention kernel (flash-style, never materialises logits),
  run per device under ``shard_map`` over the batch axis when a mesh is set (``jax.set_mesh``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

NEG_MAX = -float(jnp.finfo(jnp.float32).max)  # torch masked_fill value
SPLASH_BLOCK = 128   # splash block sizes (q and kv); sequence lengths must be multiples of it


def chunked_attention(q, k, v, scale: float, causal: bool, *, block: int = 512):
  """Query-blocked softmax attention (exact, not online-softmax: each block sees all keys at once)."""
  b, lq, h, d = q.shape
  lk = k.shape[1]
  if block >= lq:
    return _block_attention(q, k, v, scale, 0 if causal else None)
  n = -(-lq // block)
  pad = n * block - lq
  qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else q
  qb = jnp.moveaxis(qp.reshape(b, n, block, h, d), 1, 0)          # [n, B, block, h, d]
  offsets = jnp.arange(n) * block

  @jax.checkpoint   # the backward pass recomputes each block's logits instead of storing all of them
  def one(args):
    qi, off = args
    return _block_attention(qi, k, v, scale, off if causal else None)

  out = jax.lax.map(one, (qb, offsets))                            # [n, B, block, h, dv]
  out = jnp.moveaxis(out, 0, 1).reshape(b, n * block, h, v.shape[-1])
  del lk
  return out[:, :lq]


def _block_attention(q, k, v, scale, q_offset):
  """Softmax attention of a query block starting at position ``q_offset`` (None = no causal mask)."""
  sim = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
  if q_offset is not None:
    qi = q_offset + jnp.arange(q.shape[1])[:, None]
    kj = jnp.arange(k.shape[1])[None, :]
    sim = jnp.where(kj <= qi, sim, NEG_MAX)
  p = jax.nn.softmax(sim, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def splash_supported(lq: int, lk: int) -> bool:
  """Splash needs both sequence lengths to be multiples of its block size."""
  return lq % SPLASH_BLOCK == 0 and lk % SPLASH_BLOCK == 0


@functools.lru_cache(maxsize=64)
def _splash_kernel(heads: int, lq: int, lk: int, causal: bool, interpret: bool):
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  one = sm.CausalMask((lq, lk)) if causal else sm.FullMask((lq, lk))
  blk = SPLASH_BLOCK
  sizes = sk.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk, block_q_dkv=blk, block_kv_dkv=blk,
                        block_kv_dkv_compute=blk, block_q_dq=blk, block_kv_dq=blk)
  return sk.make_splash_mha(sm.MultiHeadMask([one] * heads), block_sizes=sizes, head_shards=1, q_seq_shards=1,
                            interpret=interpret)


def _batch_axes(mesh, batch: int) -> tuple[str, ...]:
  """Mesh axes ("data", "fsdp", in order) over which the flat batch axis is split inside shard_map."""
  axes, size = [], 1
  for ax in ("data", "fsdp"):
    n = mesh.shape.get(ax, 1) if ax in mesh.axis_names else 1
    if n > 1 and batch % (size * n) == 0:
      axes.append(ax)
      size *= n
  return tuple(axes)


def splash_attention(q, k, v, scale: float, causal: bool, *, interpret: bool = False):
  """Pallas splash attention (TPU; ``interpret=True`` runs the same kernel on any backend, slowly)."""
  b, lq, h, d = q.shape
  lk = k.shape[1]
  if not splash_supported(lq, lk):
    raise ValueError(f"splash attention needs sequence lengths divisible by {SPLASH_BLOCK}, got {lq}, {lk}")
  kernel = _splash_kernel(h, lq, lk, bool(causal), bool(interpret))
  out_dtype = v.dtype

  def local(qq, kk, vv):   # [b_local, L, h, d] -> kernel layout [h, L, d], vmapped over the batch
    tr = lambda x: jnp.swapaxes(x, 1, 2)
    o = jax.vmap(kernel)(tr(qq * jnp.asarray(scale, qq.dtype)), tr(kk), tr(vv))
    return jnp.swapaxes(o, 1, 2).astype(out_dtype)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or math.prod(mesh.shape.values()) == 1:
    return local(q, k, v)
  axes = _batch_axes(mesh, b)
  spec = P(axes if axes else None, None, None, None)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)
