#!/usr/bin/env bash
# R1-style evaluation of Qwen2.5-7B on GPU: pass@1 over k=16 samples at temperature 0.6 / top-p 0.95,
# up to 30k new tokens (+ a 2k prompt = Qwen2.5-7B's 32k positions), vLLM with tensor parallelism, GSM8K + MATH-500 + AIME24 + AMC23.
#   MODEL=/models/Qwen2.5-7B-Instruct bash examples/r1/eval/eval_qwen_7b.sh
# Several models side by side: MODELS="base=/models/Qwen2.5-7B sft=/ckpt/sft rl=/ckpt/grpo/iter_0000200".
# A Megatron checkpoint (root or iter_* dir, any TP/PP) is exported to HF on the fly.
# A killed run continues where it stopped when started again with the same OUT.
set -euo pipefail
cd "$(dirname "$0")/../../.."

PYTHON=${PYTHON:-python}
MODELS=${MODELS:-${MODEL:?set MODEL to an HF dir or Megatron checkpoint, or MODELS to NAME=PATH pairs}}
OUT=${OUT:-./eval_results/qwen25-7b}
TP=${TP:-4}
K=${K:-16}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-30720}  # + --max-prompt-length 2048 <= max_position_embeddings 32768
BENCHMARKS=${BENCHMARKS:-gsm8k,math500,aime24,amc23}
PROMPT_TYPE=${PROMPT_TYPE:-qwen_r1}

MODEL_FLAGS=()
for m in $MODELS; do MODEL_FLAGS+=(--model "$m"); done

"$PYTHON" -m mindr1.cli eval "${MODEL_FLAGS[@]}" \
    --benchmarks "$BENCHMARKS" \
    --prompt-type "$PROMPT_TYPE" \
    --n-samples "$K" --temperature 0.6 --top-p 0.95 \
    --max-new-tokens "$MAX_NEW_TOKENS" --max-prompt-length 2048 \
    --engine vllm --tp-size "$TP" --batch-size 512 \
    ${TOKENIZER:+--tokenizer "$TOKENIZER"} \
    --output-dir "$OUT" "$@"
