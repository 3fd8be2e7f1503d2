#!/usr/bin/env bash
# Stage 3, step 3: rejection-sampling output -> SFT dataset (MindSpeed-LLM's preprocess_data.sh flags).
#   INPUT, TOKENIZER_PATH, OUTPUT_PREFIX, PROMPT_TYPE (qwen)
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-python}
INPUT=${INPUT:-rejection_sampling_output.jsonl}
TOKENIZER_PATH=${TOKENIZER_PATH:-./model_from_hf/qwen2.5_7b_hf/}
OUTPUT_PREFIX=${OUTPUT_PREFIX:-./finetune_dataset/rejection_sampling_output}
PROMPT_TYPE=${PROMPT_TYPE:-qwen}
mkdir -p "$(dirname "$OUTPUT_PREFIX")"

"$PYTHON" tools/preprocess_data.py \
   --input "$INPUT" \
   --tokenizer-name-or-path "$TOKENIZER_PATH" \
   --output-prefix "$OUTPUT_PREFIX" \
   --handler-name AlpacaStyleInstructionHandler \
   --tokenizer-type PretrainedFromHF \
   --workers 4 \
   --log-interval 1000 \
   --prompt-type "$PROMPT_TYPE" \
   --map-keys '{"prompt":"prompt","query":"","response":"output"}' \
   "$@"
