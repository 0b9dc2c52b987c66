#!/usr/bin/env bash
# One SLURM task: jax.distributed settings from SLURM variables, then the trainer (same command on every node).
#   slurm_task.sh VENV REPO CONFIG WORKDIR [extra train flags...]      (DRY_RUN=1 prints instead of running)
set -euo pipefail
VENV="$1"; REPO="$2"; CONFIG="$3"; WORKDIR="$4"; shift 4
FIRST_NODE="$(scontrol show hostnames "${SLURM_JOB_NODELIST:?not inside a SLURM job}" | head -n 1)"
PORT="${V2W_COORDINATOR_PORT:-$((12000 + ${SLURM_JOB_ID:-0} % 20000))}"
export JAX_COORDINATOR_ADDRESS="$FIRST_NODE:$PORT"
export JAX_NUM_PROCESSES="${SLURM_NTASKS:?}"
export JAX_PROCESS_ID="${SLURM_PROCID:?}"
cd "$REPO"
cmd=("$VENV/bin/python" -m vid2world_jax.train "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "JAX_COORDINATOR_ADDRESS=$JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES=$JAX_NUM_PROCESSES JAX_PROCESS_ID=$JAX_PROCESS_ID"
  printf '%q ' "${cmd[@]}"; echo
else
  exec "${cmd[@]}"
fi
