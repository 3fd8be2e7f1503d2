#!/usr/bin/env bash
# Qwen2.5-7B-Instruct (HF) -> Megatron mcore checkpoint, TP=2 x PP=4, for SFT (MindSpeed-LLM flag names).
# Streams one shard at a time: ~4 GiB of RAM and ~15 GB of free disk next to MG_DIR are enough.
#   HF_DIR=/models/Qwen2.5-7B-Instruct MG_DIR=/ckpt/qwen25-7b-t2p4 bash examples/r1/sft/convert_ckpt.sh
# Set EXPORT_DIR to also convert MG_DIR back to HF (what you do after training, with --load-dir = the save dir).
set -euo pipefail
cd "$(dirname "$0")/../../.."

HF_DIR=${HF_DIR:?set HF_DIR to the Qwen2.5-7B-Instruct HF directory}
MG_DIR=${MG_DIR:-./model_weights/qwen25-7b-instruct-mcore-t2p4}
TP=${TP:-2}
PP=${PP:-4}
PYTHON=${PYTHON:-python}

"$PYTHON" tools/convert_ckpt.py \
    --use-mcore-models \
    --model-type GPT \
    --load-model-type hf \
    --save-model-type mg \
    --model-type-hf qwen2 \
    --target-tensor-parallel-size "$TP" \
    --target-pipeline-parallel-size "$PP" \
    --add-qkv-bias \
    --params-dtype bf16 \
    --load-dir "$HF_DIR" \
    --save-dir "$MG_DIR" \
    --tokenizer-model "$HF_DIR"

if [[ -n "${EXPORT_DIR:-}" ]]; then
    "$PYTHON" tools/convert_ckpt.py \
        --load-model-type mg \
        --save-model-type hf \
        --load-dir "$MG_DIR" \
        --save-dir "$EXPORT_DIR" \
        --tokenizer-model "$HF_DIR"
fi
