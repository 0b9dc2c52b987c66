"""Optimizer: AdamW + warmup/schedule + global-norm clipping, and the parameter EMA (pure functions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to ``cfg.lr`` over ``cfg.warmup_steps``, then constant or cosine decay."""
  warm = int(cfg.warmup_steps)
  if cfg.schedule == "constant":
    after = optax.constant_schedule(cfg.lr)
  elif cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(cfg.lr, max(1, total_steps - warm), alpha=cfg.end_lr_factor)
  else:
    raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")
  if warm <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warm), after], [warm])


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``(tx, lr_schedule)``; state is fp32 whatever the compute dtype (params are fp32 master weights)."""
  sched = learning_rate_schedule(cfg, total_steps)
  parts = []
  if cfg.grad_clip_norm and cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  parts.append(optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
  return optax.chain(*parts), sched


def ema_update(ema, params, decay: float):
  """``ema <- decay * ema + (1 - decay) * params`` (fp32)."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p.astype(e.dtype), ema, params)


def cast_floats(tree, dtype):
  """Casts floating leaves (compute copy of fp32 master weights); ints/keys untouched."""
  def one(x):
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
      return x.astype(dtype)
    return x
  return jax.tree.map(one, tree)
