#!/usr/bin/env bash
# R1-Zero: join the Ray head started by grpo_r1_zero_master.sh.   MASTER_ADDR=10.0.0.1 bash examples/r1_zero/grpo_r1_zero_worker.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash examples/r1_zero/ray_worker.sh
