#!/usr/bin/env bash
# Stage 3, step 2: filter the generations (MindSpeed-LLM's rejection_sampling_qwen_7b.sh flags): the
# GenRM judge (here the policy itself, as MindSpeed's script does; JUDGE overrides) validates each
# final answer against the ground truth, R1's readability filters drop mixed-language, long-paragraph,
# code-block, bad-tag and repetitive chains of thought, and the best response per prompt is kept.
# Extra flags pass through, e.g. --use-rules --judge-scope rule_rejected (Open R1: math-verify first,
# the judge only for what it rejects). Counts per filter: ${OUTPUT_PATH%.jsonl}_report.json.
#   POLICY_MODEL_PATH, DATA_PATH (the merged generate output), TP, OUTPUT_PATH, JUDGE
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-python}
POLICY_MODEL_PATH=${POLICY_MODEL_PATH:-./model_from_hf/qwen2.5_7b_rl_hf}
DATA_PATH=${DATA_PATH:-generate_output.jsonl}
TP=${TP:-4}
OUTPUT_PATH=${OUTPUT_PATH:-rejection_sampling_output.jsonl}
JUDGE=${JUDGE:-$POLICY_MODEL_PATH}

"$PYTHON" tools/rejection_sampling.py \
   --pretrain "$POLICY_MODEL_PATH" \
   --judge-model "$JUDGE" \
   --task rejection_sampling \
   --map-keys '{"prompt":"prompt", "gt_answer":"gt_answer", "response":"output"}' \
   --use-ground-truth-answer \
   --max-new-tokens 2048 \
   --prompt-max-len 2048 \
   --dataset "$DATA_PATH" \
   --temperature 0.3 \
   --top-p 0.3 \
   --repetition-penalty 1.05 \
   --enable-prefix-caching \
   --tp-size "$TP" \
   --output-path "$OUTPUT_PATH" \
   "$@"
