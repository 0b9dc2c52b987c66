#!/usr/bin/env bash
# Accelerator check on a lent GPU / TPU: the 512 train step (step time, peak memory, MFU) and the sampler
# (s per generated 320x512 frame: the teacher, 50 DDIM steps with guidance, uncached and cached, and the few-step
# student's sampler, 1 step without guidance, cached), within 8.5 minutes on one H100 / H200. Readable lines,
# then ONE JSON line last. Arguments go to benchmarks/accelerator_check.py
# (e.g. --mode=tiny for a CPU smoke run, --phases=train, --timeouts=train=300).
#
# Needs the machine's own jax, flax, optax, orbax, numpy, absl, yaml; no grain, no registry. ml_collections,
# when missing there, is taken from the wheel in benchmarks/wheels/ (pure Python, imported from the zip).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import ml_collections" >/dev/null 2>&1; then
  WHEEL="$(ls "$ROOT"/benchmarks/wheels/ml_collections-*.whl 2>/dev/null | head -n 1)"
  if [ -z "$WHEEL" ]; then
    echo '{"ok": false, "errors": {"setup": "ml_collections missing and no wheel in benchmarks/wheels"}}'
    exit 1
  fi
  export PYTHONPATH="$WHEEL${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# A rerun in the same lease reuses the compiled programs (the phases' compile times then drop out).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/v2w_jax_cache}"
# Each phase is the only process on the device: let it take most of the memory (jax's default is 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
# The orchestrator keeps every phase inside its own timeout and always prints the JSON line; this outer limit
# only guards against the orchestrator itself hanging.
exec timeout --kill-after=10 "${V2W_CHECK_LIMIT_S:-520}" "$PY" "$ROOT/benchmarks/accelerator_check.py" "$@"
