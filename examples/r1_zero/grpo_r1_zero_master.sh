#!/usr/bin/env bash
# R1-Zero: GRPO of Qwen2.5-7B (base) straight from the base model, head node (see ray_head.sh for the environment).
#   MASTER_ADDR=10.0.0.1 NNODES=2 bash examples/r1_zero/grpo_r1_zero_master.sh [key.sub=value ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash examples/r1_zero/ray_head.sh "${CONFIG:-configs/rlxf/grpo_trainer_qwen25_7b.yaml}" "$@"
