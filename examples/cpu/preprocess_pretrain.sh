#!/usr/bin/env bash
# CPU example: MATH problems + solutions as plain text -> PREFIX_text_document (EOS appended), which
# megatron-core's IndexedDataset / GPTDataset read directly.
#   bash examples/cpu/preprocess_pretrain.sh            (OUT defaults to /tmp/mindr1-data)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/mindr1-data}
TOKENIZER_DIR=${TOKENIZER_DIR:-$("$PYTHON" -m mindr1.artifacts qwen-tokenizer | sed 's/^qwen-tokenizer: //')}
DATA_DIR=${DATA_DIR:-$("$PYTHON" -m mindr1.artifacts math-data | sed 's/^math-data: //')}

"$PYTHON" tools/preprocess_data.py --input "$DATA_DIR/math/train.jsonl" --output-prefix "$OUT/math_text" \
    --handler-name GeneralPretrainHandler --map-keys '{"text":["problem","solution"]}' \
    --tokenizer-type PretrainedFromHF --tokenizer-name-or-path "$TOKENIZER_DIR" --workers 2
