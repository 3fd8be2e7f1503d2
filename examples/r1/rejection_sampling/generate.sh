#!/usr/bin/env bash
# Rejection sampling, step 1: best-of-N generation over a prompt set (the recipe's generate_vllm).
# Defaults run on a laptop CPU: real SmolLM2-135M-Instruct on a slice of real GSM8K, HF engine.
# On GPUs: MODEL=/path/to/sft_model ENGINE=vllm TP=4 N=8 MAX_NEW=4096 bash generate.sh
set -euo pipefail
MODEL=${MODEL:-$(python -m mindr1.artifacts smollm2 | cut -d' ' -f2)}
DATA=${DATA:-$(python -c 'from mindr1.artifacts import gsm8k_path; print(gsm8k_path("train"))')}
OUT=${OUT:-outputs/rejection_sampling}
ENGINE=${ENGINE:-hf}
TP=${TP:-1}
N=${N:-4}
BATCH=${BATCH:-8}
ITERS=${ITERS:-1}
MAX_NEW=${MAX_NEW:-64}

mkdir -p "$OUT"
for ((i = 0; i < ITERS; i++)); do
    mindr1 generate --pretrain "$MODEL" --dataset "$DATA" \
        --map-keys '{"prompt": "question", "gt_answer": "answer"}' --apply-chat-template \
        --max-new-tokens "$MAX_NEW" --prompt-max-len 1024 --temperature 1.0 --top-p 1.0 \
        --repetition-penalty 1.0 --best-of-n "$N" --rollout-batch-size "$BATCH" --iter "$i" \
        --tp-size "$TP" --engine "$ENGINE" --output-path "$OUT/generate_iter${i}.jsonl"
done
