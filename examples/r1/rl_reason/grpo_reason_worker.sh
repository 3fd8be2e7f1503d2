#!/usr/bin/env bash
# Reasoning RL (stage 2): join the Ray head started by grpo_reason_master.sh.
#   MASTER_ADDR=10.0.0.1 bash examples/r1/rl_reason/grpo_reason_worker.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
exec bash examples/r1_zero/ray_worker.sh
