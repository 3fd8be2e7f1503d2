#!/usr/bin/env bash
# R1-Zero GRPO on CPU with real SmolLM2-135M-Instruct on reasoning-gym arithmetic (one machine, local Ray).
#   bash examples/r1_zero/grpo_r1_zero_cpu.sh [key.sub=value ...]          (OUT defaults to /tmp/mindr1-r1-zero)
# TINY=1 runs the same pipeline on a tiny random model (machinery check, ~1 min); CONFIG=configs/rlxf/dapo_smollm2_cpu.yaml
# (or gspo_smollm2_cpu.yaml) runs DAPO (GSPO) instead of GRPO on the real model.
# Needs `pip install reasoning-gym==0.1.25` for the data.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-/tmp/mindr1-r1-zero}
SMOL=$("$PYTHON" -m mindr1.artifacts smollm2 | sed 's/^smollm2: //')
"$PYTHON" examples/r1_zero/make_arithmetic_data.py --out "$OUT/data" --train 400 --test 64 --terms 2,2 --digits 1,2
for split in train test; do
  "$PYTHON" tools/preprocess_data.py --input "$OUT/data/$split.jsonl" --output-prefix "$OUT/data/$split" \
      --handler-name R1AlpacaStyleInstructionHandler --prompt-type smollm_r1_zero \
      --templates-file configs/rlxf/templates_r1_zero.json \
      --map-keys '{"prompt":"question","query":"","response":"answer","system":"","history":""}' \
      --dataset-additional-keys labels --tokenizer-name-or-path "$SMOL" --seq-length 256 --no-progress-bar
done
if [ "${TINY:-0}" = 1 ]; then
  CONFIG=configs/rlxf/grpo_tiny_cpu.yaml; MODEL=(actor_rollout_ref.actor_rollout.model=tiny-smol actor_rollout_ref.actor_rollout.load=null)
else
  CONFIG=${CONFIG:-configs/rlxf/grpo_r1_zero_smollm2_cpu.yaml}; MODEL=(actor_rollout_ref.actor_rollout.load="$SMOL")
fi
"$PYTHON" -m mindr1.cli grpo --config "$CONFIG" "${MODEL[@]}" \
    actor_rollout_ref.actor_rollout.data_path="$OUT/data/train" training.eval_data_path="$OUT/data/test" \
    actor_rollout_ref.actor_rollout.save="$OUT/run" "$@"
echo "curves: $OUT/run/grpo_curves.png   metrics: $OUT/run/metrics.jsonl   tensorboard --logdir $OUT/run/tensorboard"
