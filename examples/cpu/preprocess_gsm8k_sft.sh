#!/usr/bin/env bash
# CPU example: GSM8K train (real data) -> packed SFT dataset with the real Qwen2.5 tokenizer, then read it back.
#   bash examples/cpu/preprocess_gsm8k_sft.sh            (OUT defaults to /tmp/mindr1-data; ~5 s on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/mindr1-data}
TOKENIZER_DIR=${TOKENIZER_DIR:-$("$PYTHON" -m mindr1.artifacts qwen-tokenizer | sed 's/^qwen-tokenizer: //')}
DATA_DIR=${DATA_DIR:-$("$PYTHON" -m mindr1.artifacts math-data | sed 's/^math-data: //')}

"$PYTHON" tools/preprocess_data.py \
    --input "$DATA_DIR/gsm8k/train.jsonl" \
    --output-prefix "$OUT/gsm8k_sft" \
    --handler-name AlpacaStyleInstructionHandler \
    --map-keys '{"prompt":"question","query":"","response":"answer","system":"","history":""}' \
    --prompt-type qwen \
    --tokenizer-type PretrainedFromHF --tokenizer-name-or-path "$TOKENIZER_DIR" \
    --seq-length 1024 --pack --workers 2 --log-interval 2000

"$PYTHON" - "$OUT/gsm8k_sft" <<'PY'
import sys
from mindr1.data.datasets import InstructionDataset, read_summary
ds, s = InstructionDataset(sys.argv[1]), read_summary(sys.argv[1])
item = ds[0]
print(f"{s['samples']} samples packed into {len(ds)} sequences of {item['input_ids'].size} tokens; "
      f"first sequence holds {item['segment_ids'].max()} samples, "
      f"{int((item['labels'] != -100).sum())} trained tokens")
PY
