#!/usr/bin/env bash
# CPU example: real SmolLM2-135M-Instruct (HF) -> Megatron TP=3 x PP=2 -> re-shard TP=1 x PP=3 -> HF.
# SmolLM2 has 9 query / 3 KV heads, so TP can only be 1 or 3. Takes about a minute on 2 cores.
#   bash examples/cpu/convert_smollm2.sh            (OUT defaults to /tmp/smollm2-convert)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/smollm2-convert}
HF_DIR=${HF_DIR:-$("$PYTHON" -m mindr1.artifacts smollm2 | sed 's/^smollm2: //')}

"$PYTHON" tools/convert_ckpt.py --load-model-type hf --save-model-type mg \
    --target-tensor-parallel-size 3 --target-pipeline-parallel-size 2 \
    --load-dir "$HF_DIR" --save-dir "$OUT/mg_t3p2" --force
"$PYTHON" tools/convert_ckpt.py --load-model-type mg --save-model-type mg \
    --target-tensor-parallel-size 1 --target-pipeline-parallel-size 3 \
    --load-dir "$OUT/mg_t3p2" --save-dir "$OUT/mg_t1p3" --force
"$PYTHON" tools/convert_ckpt.py --load-model-type mg --save-model-type hf \
    --load-dir "$OUT/mg_t1p3" --save-dir "$OUT/hf" --force

# Every tensor must come back bit-identical.
"$PYTHON" - "$HF_DIR" "$OUT/hf" <<'PY'
import sys, torch
from mindr1.models.adapter import open_hf_checkpoint
(a, names), (b, _) = open_hf_checkpoint(sys.argv[1]), open_hf_checkpoint(sys.argv[2])
bad = [n for n in names if not torch.equal(a(n), b(n))]
print("bit-identical" if not bad else f"DIFFERENT: {bad[:5]}")
sys.exit(1 if bad else 0)
PY
find "$OUT/mg_t3p2" | sort
