#!/usr/bin/env bash
# Create / set up / run / stop / delete a training job on a Cloud TPU pod slice. Every worker runs the same
# command; jax.distributed.initialize() finds the other workers by itself (V2W_DISTRIBUTED=1).
#
#   launch/tpu_pod.sh [--dry-run] create  --name v2w --zone us-east5-a --accelerator v5p-64 [--project P] [--spot]
#   launch/tpu_pod.sh [--dry-run] setup   --name v2w --zone us-east5-a          # copy repo, venv from requirements.txt
#   launch/tpu_pod.sh [--dry-run] run     --name v2w --zone us-east5-a --config configs/rt1.py \
#                                         --workdir /mnt/runs/rt1 -- --config.init_from=/mnt/ckpt/dc512
#   launch/tpu_pod.sh [--dry-run] logs    --name v2w --zone us-east5-a          # tail worker 0's log
#   launch/tpu_pod.sh [--dry-run] stop    --name v2w --zone us-east5-a          # SIGTERM: checkpoint, then exit
#   launch/tpu_pod.sh [--dry-run] delete  --name v2w --zone us-east5-a
#
# --dry-run prints every command instead of running it. Hyper-parameters live in the config, not here.
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
ACTION="${1:-}"; shift || true
NAME=v2w; ZONE=""; ACCEL=v5p-8; VERSION=v2-alpha-tpuv5; PROJECT=""; SPOT=0
CONFIG=configs/rt1.py; WORKDIR=""; REMOTE_DIR='~/vid2world_jax'; EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2;;
    --zone) ZONE="$2"; shift 2;;
    --accelerator) ACCEL="$2"; shift 2;;
    --version) VERSION="$2"; shift 2;;
    --project) PROJECT="$2"; shift 2;;
    --spot) SPOT=1; shift;;
    --config) CONFIG="$2"; shift 2;;
    --workdir) WORKDIR="$2"; shift 2;;
    --dry-run) DRY=1; shift;;
    --) shift; EXTRA=("$@"); break;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
[[ -n "$ZONE" ]] || { echo "--zone is required" >&2; exit 2; }

run() {  # prints (dry run) or executes one command
  if [[ $DRY == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}
GC=(gcloud compute tpus tpu-vm)
COMMON=(--zone "$ZONE"); [[ -n "$PROJECT" ]] && COMMON+=(--project "$PROJECT")
on_all() { run "${GC[@]}" ssh "$NAME" "${COMMON[@]}" --worker=all --command "$1"; }

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
case "$ACTION" in
  create)
    args=("${GC[@]}" create "$NAME" "${COMMON[@]}" --accelerator-type "$ACCEL" --version "$VERSION")
    [[ $SPOT == 1 ]] && args+=(--spot)
    run "${args[@]}";;
  setup)
    # The committed tree only (no venv, no caches): git archive -> every worker -> unpack.
    run git -C "$REPO_ROOT" archive --format=tar.gz -o /tmp/v2w_src.tar.gz HEAD
    run "${GC[@]}" scp /tmp/v2w_src.tar.gz "$NAME:v2w_src.tar.gz" "${COMMON[@]}" --worker=all
    on_all "mkdir -p $REMOTE_DIR && tar xzf ~/v2w_src.tar.gz -C $REMOTE_DIR"
    # requirements.txt with jax replaced by jax[tpu] (same version), then the package itself.
    on_all "cd $REMOTE_DIR && python3 -m venv .venv && . .venv/bin/activate && sed 's/^jax==/jax[tpu]==/' requirements.txt > /tmp/req-tpu.txt && pip install -q -r /tmp/req-tpu.txt && pip install -q --no-deps -e .";;
  run)
    [[ -n "$WORKDIR" ]] || { echo "--workdir is required (a directory every worker sees: NFS or a gcsfuse-mounted bucket)" >&2; exit 2; }
    extra=""; for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do extra+=" $(printf '%q' "$a")"; done
    on_all "cd $REMOTE_DIR && . .venv/bin/activate && V2W_DISTRIBUTED=1 nohup python -m vid2world_jax.train --config=$CONFIG --workdir=$WORKDIR$extra > ~/v2w_train.log 2>&1 &";;
  logs)
    run "${GC[@]}" ssh "$NAME" "${COMMON[@]}" --worker=0 --command "tail -n 50 ~/v2w_train.log";;
  stop)
    on_all "pkill -TERM -f 'python -m vid2world_jax.train' || true";;
  delete)
    run "${GC[@]}" delete "$NAME" "${COMMON[@]}" --quiet;;
  *)
    echo "usage: $0 [--dry-run] create|setup|run|logs|stop|delete [options]" >&2; exit 2;;
esac
