#!/usr/bin/env bash
# Shared by the *_master.sh scripts: start the Ray head, wait for the devices, run `mindr1 grpo`.
#   bash examples/r1_zero/ray_head.sh CONFIG [key.sub=value ...]
# Environment: RAY_HEAD_IP (default MASTER_ADDR, else 127.0.0.1), RAY_PORT (6379), NNODES (1),
# DEVICES_PER_NODE (8), DEVICE (auto: GPU if nvidia-smi works, NPU if npu-smi works, else CPU),
# RAY_DASHBOARD (0; 1 starts it on 127.0.0.1, or on RAY_DASHBOARD_HOST), RAY_WAIT_S (600),
# RAY_CLIENT_SERVER_PORT (unset: no Ray client server), RAY_AUTH_MODE (token; `disabled` turns
# authentication off, with a warning). Token authentication is on: the head writes a token to
# ~/.ray/auth_token (mode 600) if none exists; every other node needs the same token: copy that file
# to the same path there, or export RAY_AUTH_TOKEN=<its content>. With RAY_HEAD_IP=127.0.0.1 every
# Ray socket stays on 127.0.0.1 (a single-machine cluster).
set -euo pipefail
CONFIG=${1:?usage: ray_head.sh CONFIG [overrides]}; shift
PYTHON=${PYTHON:-python}
HEAD_IP=${RAY_HEAD_IP:-${MASTER_ADDR:-127.0.0.1}}
PORT=${RAY_PORT:-6379}
NNODES=${NNODES:-1}
PER_NODE=${DEVICES_PER_NODE:-8}
WAIT_S=${RAY_WAIT_S:-600}
export RAY_worker_niceness=${RAY_worker_niceness:-0}
if [ "${RAY_AUTH_MODE:-token}" = disabled ]; then
  echo "[ray_head] WARNING: RAY_AUTH_MODE=disabled: anyone who can reach $HEAD_IP:$PORT can run code on this cluster" >&2
fi
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
case "$HEAD_IP" in
  127.0.0.1|localhost|::1) export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ;;  # Ray keeps every socket on loopback
esac
if [ -z "${DEVICE:-}" ]; then
  if nvidia-smi -L >/dev/null 2>&1; then DEVICE=GPU; elif npu-smi info >/dev/null 2>&1; then DEVICE=NPU; else DEVICE=CPU; fi
fi
case "$DEVICE" in
  GPU) DEV_FLAGS=(--num-gpus "$PER_NODE") ;;
  NPU) DEV_FLAGS=(--resources "{\"NPU\": $PER_NODE}") ;;   # Ray's name for Ascend devices
  CPU) DEV_FLAGS=(--num-cpus "$PER_NODE") ;;
  *) echo "DEVICE must be GPU, NPU or CPU (got $DEVICE)" >&2; exit 2 ;;
esac
DASH=(--include-dashboard=false)
[ "${RAY_DASHBOARD:-0}" = 1 ] && DASH=(--include-dashboard=true --dashboard-host "${RAY_DASHBOARD_HOST:-127.0.0.1}")
# `ray start` with mindr1's rules: token, no client server unless asked (mindr1/rl/ray_node.py)
"$PYTHON" -m mindr1.rl.ray_node --head --node-ip-address "$HEAD_IP" --port "$PORT" "${DEV_FLAGS[@]}" "${DASH[@]}" \
    --disable-usage-stats
trap 'echo "[ray_head] leaving Ray running; stop it with: ray stop" >&2' EXIT
WANT=$((NNODES * PER_NODE))
"$PYTHON" - "$HEAD_IP:$PORT" "$DEVICE" "$WANT" "$WAIT_S" <<'PY'
import sys, time
import ray
address, device, want, wait_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ray.init(address=address, log_to_driver=False)
deadline = time.monotonic() + wait_s
while True:
    have = int(ray.cluster_resources().get(device, 0))
    if have >= want:
        print(f"[ray_head] {have} {device} devices on {len(ray.nodes())} nodes: starting GRPO", flush=True)
        break
    if time.monotonic() > deadline:
        sys.exit(f"[ray_head] only {have} of {want} {device} devices joined within {wait_s:.0f} s; start the "
                 f"worker script on every other node with MASTER_ADDR={address.split(':')[0]} and the head's "
                 "~/.ray/auth_token (or RAY_AUTH_TOKEN)")
    time.sleep(5)
PY
"$PYTHON" -m mindr1.cli grpo --config "$CONFIG" training.ray_address="$HEAD_IP:$PORT" "$@"
