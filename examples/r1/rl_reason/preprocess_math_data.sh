#!/usr/bin/env bash
# GRPO prompts for Qwen2.5-7B: math rows -> R1-Zero prompts (qwen_r1 template, open assistant turn) with the
# ground truth kept in the labels file (read back as a string by mindr1.data.PromptDataset).
#   TOKENIZER_DIR=/models/Qwen2.5-7B RAW=/data/deepscaler/train.parquet bash examples/r1/rl_reason/preprocess_math_data.sh
# Columns default to problem/answer (DeepScaleR, MATH); e.g. MAP_KEYS='{"prompt":"question","response":"ground_truth_answer"}'.
set -euo pipefail
cd "$(dirname "$0")/../../.."

PYTHON=${PYTHON:-python}
TOKENIZER_DIR=${TOKENIZER_DIR:?set TOKENIZER_DIR to the Qwen2.5 HF directory (tokenizer files)}
RAW=${RAW:?set RAW to the math data (file, directory, glob or parquet@PATH)}
OUT=${OUT:-./dataset/r1_math}
MAP_KEYS=${MAP_KEYS:-'{"prompt":"problem","query":"","response":"answer","system":"","history":""}'}

"$PYTHON" tools/preprocess_data.py \
    --input "$RAW" \
    --output-prefix "$OUT/math" \
    --handler-name R1AlpacaStyleInstructionHandler \
    --prompt-type "${PROMPT_TYPE:-qwen_r1}" \
    --map-keys "$MAP_KEYS" \
    --dataset-additional-keys labels ${EXTRA_KEYS:-} \
    --tokenizer-type PretrainedFromHF \
    --tokenizer-name-or-path "$TOKENIZER_DIR" \
    --seq-length "${MAX_PROMPT_LENGTH:-2048}" \
    --workers "${WORKERS:-8}" \
    --skip-invalid
