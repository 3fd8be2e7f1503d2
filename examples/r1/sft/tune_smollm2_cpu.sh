#!/usr/bin/env bash
# Cold-start SFT of real SmolLM2-135M-Instruct on CPU, PP=2 on two gloo processes (its 3 KV heads do not
# split by TP=2; TP=3 works too: TP=3 PP=1). Builds GSM8K instruction data and the converted checkpoint first.
#   WORK  working directory (default /tmp/mindr1-sft-cpu)     TRAIN_ITERS, TP, PP, ROWS
#   PACK=1 (default) packs samples into 512-token sequences (4 per step); PACK=0: 8 padded samples per step.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/mindr1-sft-cpu}
TP=${TP:-1}
PP=${PP:-2}
ROWS=${ROWS:-256}
TRAIN_ITERS=${TRAIN_ITERS:-20}
PACK=${PACK:-1}
if [ "$PACK" = 1 ]; then
    DATA="$WORK/data/gsm8k_packed"; PACK_FLAGS=(--pack); BATCH=(micro_batch_size=1 global_batch_size=4)
else
    DATA="$WORK/data/gsm8k"; PACK_FLAGS=(); BATCH=()
fi
mkdir -p "$WORK"
HF_DIR=$("$PYTHON" -c "from mindr1.artifacts import smollm2_dir; print(smollm2_dir())")
GSM8K=$("$PYTHON" -c "from mindr1.artifacts import gsm8k_path; print(gsm8k_path('train'))")
head -n "$ROWS" "$GSM8K" > "$WORK/gsm8k_train.jsonl"
"$PYTHON" tools/preprocess_data.py --input "$WORK/gsm8k_train.jsonl" --output-prefix "$DATA" \
    --handler-name AlpacaStyleInstructionHandler --map-keys '{"prompt":"question","response":"answer"}' \
    --prompt-type chatml --tokenizer-name-or-path "$HF_DIR" --seq-length 512 "${PACK_FLAGS[@]}"
[ -d "$WORK/mg_tp${TP}_pp${PP}" ] || "$PYTHON" tools/convert_ckpt.py --load-model-type hf --save-model-type mg \
    --target-tensor-parallel-size "$TP" --target-pipeline-parallel-size "$PP" \
    --load-dir "$HF_DIR" --save-dir "$WORK/mg_tp${TP}_pp${PP}"
"$PYTHON" -m mindr1.cli sft --config configs/sft/smollm2_cpu.yaml \
    tensor_model_parallel_size="$TP" pipeline_model_parallel_size="$PP" train_iters="$TRAIN_ITERS" \
    "${BATCH[@]}" data_path="$DATA" load="$WORK/mg_tp${TP}_pp${PP}" save="$WORK/sft_tp${TP}_pp${PP}" "$@"
