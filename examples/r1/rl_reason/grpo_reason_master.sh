#!/usr/bin/env bash
# Reasoning RL (stage 2): GRPO of Qwen2.5-7B on Ray, head node. Run grpo_reason_worker.sh on every other node.
#   MASTER_ADDR=10.0.0.1 NNODES=2 bash examples/r1/rl_reason/grpo_reason_master.sh [key.sub=value ...]
# The head binds to 127.0.0.1 unless RAY_HEAD_IP (or MASTER_ADDR) names an interface; the dashboard is off
# unless RAY_DASHBOARD=1 (then on 127.0.0.1 unless RAY_DASHBOARD_HOST). Token authentication is on: copy the
# head's ~/.ray/auth_token to every worker node (or set RAY_AUTH_TOKEN there); see ray_head.sh.
# It waits (RAY_WAIT_S, default 600 s) until NNODES x DEVICES_PER_NODE devices joined.
set -euo pipefail
cd "$(dirname "$0")/../../.."
CONFIG=${CONFIG:-configs/rlxf/grpo_trainer_qwen25_7b_reason.yaml}
exec bash examples/r1_zero/ray_head.sh "$CONFIG" "$@"
