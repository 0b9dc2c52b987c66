"""Fast module construction under tracing (``nnx.eval_shape`` / ``nnx.jit`` of a constructor).

Why this exists: on jax 0.10.x, ``Tracer.sharding`` raises an AttributeError whose message is built eagerly by
``DynamicJaxprTracer._origin_msg``, which walks EVERY equation traced so far (``find_progenitors``). Flax NNX's
``Variable.set_value`` probes ``getattr(value, "sharding", None)`` on each RNG-counter update, i.e. once per
``rngs.params()`` call, so building a model under a trace is O(#params x #equations) = quadratic. For the
full-size DynamiCrafter UNet (1371 RNG draws) that is ~250 s of pure Python on a loaded 2-core CPU instead of
~9 s (measured, benchmarks/unet_forward.py). Upstream: jax-ml/jax PR #40041 ("Avoid quadratic tracing behaviour")
removes that message computation.

:func:`cheap_tracer_errors` disables only that *error-message decoration* for the duration of a ``with`` block
(the AttributeError is still raised, so ``getattr(x, "sharding", None)`` behaves the same). Values, shapes,
parameter paths and RNG streams are untouched. Not thread-safe (it swaps a class attribute); nested use is fine.
"""

from __future__ import annotations

import contextlib

try:  # private JAX API: tolerate its absence (then nothing is patched and construction is merely slower)
  from jax._src.interpreters import partial_eval as _pe
  _TRACER = getattr(_pe, "DynamicJaxprTracer", None)
except ImportError:  # pragma: no cover - depends on the installed jax
  _TRACER = None


def _no_origin(self) -> str:
  del self
  return ""


@contextlib.contextmanager
def cheap_tracer_errors():
  """Within the block, tracer error messages skip the O(#equations) "origin" walk. Restored on exit."""
  if _TRACER is None or not hasattr(_TRACER, "_origin_msg") or _TRACER._origin_msg is _no_origin:
    yield
    return
  original = _TRACER.__dict__.get("_origin_msg")
  _TRACER._origin_msg = _no_origin
  try:
    yield
  finally:
    if original is None:
      del _TRACER._origin_msg
    else:
      _TRACER._origin_msg = original
