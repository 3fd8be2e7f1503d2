#!/usr/bin/env bash
# Stage 3 on a laptop CPU, all four steps on real SmolLM2-135M-Instruct and real GSM8K train prompts:
#   1. best-of-N generation in two --iter slices (as two nodes would), joined by --task merge
#   2. rejection sampling: math-verify rules against the ground truth, R1's readability filters, and
#      SmolLM2 as the GenRM judge of what the rules rejected (a 135M model cannot follow the verdict
#      format, so it rates quality here: configs/rejection_sampling/judge_quality_short.txt)
#   3. preprocessing into an SFT dataset   4. SFT from the converted checkpoint
# A few minutes on 2 cores. WORK (default /tmp/mindr1-rs-cpu), PROMPTS (16), N (4), MAX_NEW (32), TRAIN_ITERS (2).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
WORK=${WORK:-/tmp/mindr1-rs-cpu}
PROMPTS=${PROMPTS:-16}
N=${N:-4}
MAX_NEW=${MAX_NEW:-32}
TRAIN_ITERS=${TRAIN_ITERS:-2}
mkdir -p "$WORK"
HF_DIR=$("$PYTHON" -c "from mindr1.artifacts import smollm2_dir; print(smollm2_dir())")
GSM8K=$("$PYTHON" -c "from mindr1.artifacts import gsm8k_path; print(gsm8k_path('train'))")
head -n "$PROMPTS" "$GSM8K" > "$WORK/prompts.jsonl"
SLICE=$(( (PROMPTS + 1) / 2 ))

for iter in 0 1; do
    "$PYTHON" tools/rejection_sampling.py --task generate_vllm --pretrain "$HF_DIR" --engine hf \
        --dataset "$WORK/prompts.jsonl" --map-keys '{"prompt":"question","gt_answer":"answer","response":""}' \
        --apply-chat-template --best-of-n "$N" --max-new-tokens "$MAX_NEW" --prompt-max-len 1024 \
        --temperature 0.7 --top-p 0.8 --repetition-penalty 1.05 \
        --rollout-batch-size "$SLICE" --iter "$iter" --output-path "$WORK/generate_output_iter${iter}.jsonl"
done
"$PYTHON" tools/rejection_sampling.py --task merge --dataset "$WORK/generate_output_iter*.jsonl" \
    --output-path "$WORK/generate_output.jsonl"

"$PYTHON" tools/rejection_sampling.py --task rejection_sampling --pretrain "$HF_DIR" --engine hf \
    --dataset "$WORK/generate_output.jsonl" \
    --map-keys '{"prompt":"prompt", "gt_answer":"gt_answer", "response":"output"}' \
    --use-rules --judge-scope rule_rejected \
    --judge-template configs/rejection_sampling/judge_quality_short.txt --min-judge-score 1 \
    --keep-truncated --max-new-tokens 3 --prompt-max-len 1024 --temperature 0 \
    --output-path "$WORK/rejection_sampling_output.jsonl"
"$PYTHON" - "$WORK/rejection_sampling_output_report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("per filter (checked / failed / dropped):")
for name, c in r["filters"].items():
    print(f"  {name:<15} {c['checked']:>4} {c['failed']:>4} {c['dropped']:>4}")
print(f"judge: {r['judge']['outcomes']}, recovered {r['judge']['recovered']}; kept {r['selection']['kept']} rows "
      f"for {r['selection']['prompts_with_output']} of {r['input']['prompts']} prompts")
PY

"$PYTHON" tools/preprocess_data.py --input "$WORK/rejection_sampling_output.jsonl" \
    --tokenizer-name-or-path "$HF_DIR" --output-prefix "$WORK/data/rejection_sampling_output" \
    --handler-name AlpacaStyleInstructionHandler --tokenizer-type PretrainedFromHF --workers 1 \
    --log-interval 1000 --prompt-type chatml --map-keys '{"prompt":"prompt","query":"","response":"output"}' \
    --seq-length 256
[ -d "$WORK/mg" ] || "$PYTHON" tools/convert_ckpt.py --load-model-type hf --save-model-type mg \
    --target-tensor-parallel-size 1 --target-pipeline-parallel-size 1 --load-dir "$HF_DIR" --save-dir "$WORK/mg"
"$PYTHON" -m mindr1.cli sft data_path="$WORK/data/rejection_sampling_output" load="$WORK/mg" save="$WORK/sft" \
    finetune=true train_iters="$TRAIN_ITERS" micro_batch_size=1 global_batch_size=2 seq_length=256 lr=1e-5 \
    lr_decay_style=constant save_interval="$TRAIN_ITERS" "$@"
