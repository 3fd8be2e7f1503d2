#!/usr/bin/env bash
# Shared by the *_worker.sh scripts: join the Ray head at MASTER_ADDR:RAY_PORT with this node's devices.
# Environment: MASTER_ADDR (required), RAY_PORT (6379), NODE_IP (this node's address, default: Ray's choice),
# DEVICES_PER_NODE (8), DEVICE (auto), RAY_AUTH_MODE (token, as on the head). The head's token must be
# here: copy the head's ~/.ray/auth_token to the same path on this node, or export RAY_AUTH_TOKEN.
set -euo pipefail
PYTHON=${PYTHON:-python}
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the head node address}
PORT=${RAY_PORT:-6379}
PER_NODE=${DEVICES_PER_NODE:-8}
if [ "${RAY_AUTH_MODE:-token}" = disabled ]; then
  echo "[ray_worker] WARNING: RAY_AUTH_MODE=disabled: this node accepts work from anyone who reaches it" >&2
fi
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_worker_niceness=${RAY_worker_niceness:-0}
if [ -z "${DEVICE:-}" ]; then
  if nvidia-smi -L >/dev/null 2>&1; then DEVICE=GPU; elif npu-smi info >/dev/null 2>&1; then DEVICE=NPU; else DEVICE=CPU; fi
fi
case "$DEVICE" in
  GPU) DEV_FLAGS=(--num-gpus "$PER_NODE") ;;
  NPU) DEV_FLAGS=(--resources "{\"NPU\": $PER_NODE}") ;;
  CPU) DEV_FLAGS=(--num-cpus "$PER_NODE") ;;
  *) echo "DEVICE must be GPU, NPU or CPU (got $DEVICE)" >&2; exit 2 ;;
esac
IP_FLAGS=()
[ -n "${NODE_IP:-}" ] && IP_FLAGS=(--node-ip-address "$NODE_IP")
# `ray start` with mindr1's rules: refuses to start without the head's token (mindr1/rl/ray_node.py)
"$PYTHON" -m mindr1.rl.ray_node --address "$MASTER_ADDR:$PORT" "${IP_FLAGS[@]}" "${DEV_FLAGS[@]}" --disable-usage-stats
