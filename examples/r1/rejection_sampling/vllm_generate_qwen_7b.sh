#!/usr/bin/env bash
# Stage 3, step 1: best-of-N generation with vLLM (MindSpeed-LLM's vllm_generate_qwen_7b.sh flags).
# One --iter slice of ROLLOUT_BATCH_SIZE prompts per call: run one slice per node / device group
# (iter=0,1,2...), then join them:  mindr1 rejection-sample --task merge --dataset 'generate_output_iter*.jsonl' ...
#   POLICY_MODEL_PATH  HF dir of the stage-2 model      DATA_PATH  prompts (file, dir, glob or FORMAT@PATH)
#   N, iter, ROLLOUT_BATCH_SIZE, TP, OUTPUT_PATH
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-python}
POLICY_MODEL_PATH=${POLICY_MODEL_PATH:-./model_from_hf/qwen2.5_7b_rl_hf}
DATA_PATH=${DATA_PATH:-./dataset/math/train.jsonl}
N=${N:-8}
iter=${iter:-0}
ROLLOUT_BATCH_SIZE=${ROLLOUT_BATCH_SIZE:-1000}
TP=${TP:-4}
OUTPUT_PATH=${OUTPUT_PATH:-generate_output_iter${iter}.jsonl}

"$PYTHON" tools/rejection_sampling.py \
   --pretrain "$POLICY_MODEL_PATH" \
   --task generate_vllm \
   --max-new-tokens 2048 \
   --prompt-max-len 2048 \
   --dataset "$DATA_PATH" \
   --map-keys '{"prompt":"input","gt_answer":"gt_answer","response":""}' \
   --temperature 0.7 \
   --repetition-penalty 1.05 \
   --top-p 0.8 \
   --best-of-n "$N" \
   --enable-prefix-caching \
   --tp-size "$TP" \
   --iter "$iter" \
   --rollout-batch-size "$ROLLOUT_BATCH_SIZE" \
   --output-path "$OUTPUT_PATH" \
   "$@"
