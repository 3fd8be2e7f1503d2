#!/usr/bin/env bash
# Stage 1 (cold start) / stage 3 SFT of Qwen2.5-7B-Instruct on Megatron TP=2 x PP=4, bf16, distributed
# optimizer, launched with torchrun on NNODES nodes of NPROC_PER_NODE devices. Everything is overridable:
#   CKPT_LOAD_DIR  converted checkpoint (examples/r1/sft/convert_ckpt.sh)   DATA_PATH  preprocessed prefix
#   CKPT_SAVE_DIR  where to save / resume from                               TP, PP, NNODES, NODE_RANK, ...
set -euo pipefail
cd "$(dirname "$0")/../../.."
NPROC_PER_NODE=${NPROC_PER_NODE:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-6000}
CKPT_LOAD_DIR=${CKPT_LOAD_DIR:-./model_weights/Qwen2.5-7B-Instruct-mcore-tp2-pp4}
CKPT_SAVE_DIR=${CKPT_SAVE_DIR:-./ckpt/qwen25-7b-sft}
DATA_PATH=${DATA_PATH:-./dataset/r1_cot/r1_cot}
TP=${TP:-2}
PP=${PP:-4}
SEQ_LEN=${SEQ_LEN:-8192}
GBS=${GBS:-64}
MBS=${MBS:-1}
TRAIN_ITERS=${TRAIN_ITERS:-2000}
# MINDR1_ACCELERATOR=npu|cuda|cpu overrides detection (hccl / nccl / gloo).
export MINDR1_ACCELERATOR=${MINDR1_ACCELERATOR:-}
[ -z "$MINDR1_ACCELERATOR" ] && unset MINDR1_ACCELERATOR
PYTHON=${PYTHON:-python}

"$PYTHON" -m torch.distributed.run --nproc-per-node "$NPROC_PER_NODE" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    -m mindr1.training.sft --config configs/sft/qwen25_7b.yaml \
    --use-mcore-models \
    --tensor-model-parallel-size "$TP" \
    --pipeline-model-parallel-size "$PP" \
    --seq-length "$SEQ_LEN" \
    --micro-batch-size "$MBS" \
    --global-batch-size "$GBS" \
    --train-iters "$TRAIN_ITERS" \
    --prompt-type qwen_r1 \
    --bf16 \
    --use-distributed-optimizer \
    --finetune \
    --load "$CKPT_LOAD_DIR" \
    --save "$CKPT_SAVE_DIR" \
    --data-path "$DATA_PATH" \
    "$@"
