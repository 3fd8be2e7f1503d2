#!/usr/bin/env bash
# Cold-start SFT data for Qwen2.5-7B: R1-distill rows (OpenR1-Math style) -> "<think>..</think>\n<answer>\boxed{..}</answer>"
# Alpaca rows -> packed, label-masked indexed dataset (qwen template; loss on the response only).
#   TOKENIZER_DIR=/models/Qwen2.5-7B-Instruct RAW=/data/OpenR1-Math-220k/data bash examples/r1/sft/preprocess_reason_cot_data.sh
# Writes $OUT/reason_cot_packed_{input_ids,attention_mask,labels}_document.{bin,idx} and $OUT/reason_cot_summary.json.
set -euo pipefail
cd "$(dirname "$0")/../../.."

PYTHON=${PYTHON:-python}
TOKENIZER_DIR=${TOKENIZER_DIR:?set TOKENIZER_DIR to the Qwen2.5 HF directory (tokenizer files)}
RAW=${RAW:?set RAW to the R1-distill data (file, directory, glob or parquet@PATH)}
OUT=${OUT:-./dataset/r1_sft}
SEQ_LENGTH=${SEQ_LENGTH:-8192}
WORKERS=${WORKERS:-8}
MAP_KEYS=${MAP_KEYS:-'{"problem":"problem","solution":"solution","answer":"answer","correctness_count":"correctness_count"}'}

mkdir -p "$OUT"
"$PYTHON" tools/annotate_r1.py --input "$RAW" --output "$OUT/reason_cot.jsonl" --map-keys "$MAP_KEYS" \
    --min-correctness "${MIN_CORRECTNESS:-1}" --skip-invalid

"$PYTHON" tools/preprocess_data.py \
    --input "$OUT/reason_cot.jsonl" \
    --output-prefix "$OUT/reason_cot" \
    --handler-name AlpacaStyleInstructionHandler \
    --prompt-type qwen \
    --tokenizer-type PretrainedFromHF \
    --tokenizer-name-or-path "$TOKENIZER_DIR" \
    --seq-length "$SEQ_LENGTH" \
    --pack \
    --workers "$WORKERS" \
    --log-interval 10000
