#!/usr/bin/env bash
# The smallest SFT that runs: a random 4-layer model with SmolLM2's vocabulary, TP=2 on two gloo processes,
# real GSM8K rows, packed into 512-token sequences (PACK=0: padded samples). Seconds per step.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/mindr1-sft-tiny}
mkdir -p "$WORK"
if [ "${PACK:-1}" = 1 ]; then
    PACK_FLAGS=(--pack); SEQ=512; BATCH=(micro_batch_size=1 global_batch_size=4)
else
    PACK_FLAGS=(); SEQ=256; BATCH=(micro_batch_size=2 global_batch_size=8)
fi
HF_DIR=$("$PYTHON" -c "from mindr1.artifacts import smollm2_dir; print(smollm2_dir())")
GSM8K=$("$PYTHON" -c "from mindr1.artifacts import gsm8k_path; print(gsm8k_path('train'))")
head -n 64 "$GSM8K" > "$WORK/gsm8k_train.jsonl"
"$PYTHON" tools/preprocess_data.py --input "$WORK/gsm8k_train.jsonl" --output-prefix "$WORK/data/gsm8k" \
    --handler-name AlpacaStyleInstructionHandler --map-keys '{"prompt":"question","response":"answer"}' \
    --prompt-type chatml --tokenizer-name-or-path "$HF_DIR" --seq-length "$SEQ" --no-progress-bar "${PACK_FLAGS[@]}"
"$PYTHON" -m mindr1.cli sft model=tiny-smol data_path="$WORK/data/gsm8k" save="$WORK/run" \
    train_iters=${TRAIN_ITERS:-10} "${BATCH[@]}" seq_length="$SEQ" lr=1e-3 \
    tensor_model_parallel_size=${TP:-2} "$@"
