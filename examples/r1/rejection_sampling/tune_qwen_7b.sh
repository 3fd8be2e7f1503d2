#!/usr/bin/env bash
# Stage 3, step 4: SFT of Qwen2.5-7B on the rejection-sampling data (MindSpeed-LLM's tune_qwen_7b.sh
# flags, launched with torchrun on NNODES nodes of NPUS_PER_NODE devices; TP=4 x PP=2 by default).
#   CKPT_LOAD_DIR  converted checkpoint (examples/r1/sft/convert_ckpt.sh)   DATA_PATH  preprocessed prefix
#   CKPT_SAVE_DIR, TOKENIZER_PATH, TP, PP, SEQ_LEN, MBS, GBS, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT
# MINDR1_ACCELERATOR=npu|cuda|cpu overrides device detection (hccl / nccl / gloo).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-python}
NPUS_PER_NODE=${NPUS_PER_NODE:-8}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-6000}
CKPT_LOAD_DIR=${CKPT_LOAD_DIR:-./model_weights/qwen2.5_7b_mcore_tp4_pp2}
CKPT_SAVE_DIR=${CKPT_SAVE_DIR:-./ckpt/qwen25-7b-rejection-sampling-sft}
DATA_PATH=${DATA_PATH:-./finetune_dataset/rejection_sampling_output}
TOKENIZER_PATH=${TOKENIZER_PATH:-./model_from_hf/qwen2.5_7b_hf/}
TP=${TP:-4}
PP=${PP:-2}
SEQ_LEN=${SEQ_LEN:-4096}
MBS=${MBS:-1}
GBS=${GBS:-64}
NUM_LAYER_LIST=${NUM_LAYER_LIST:-14,14}   # MindSpeed's 8-stage list is 4,4,4,4,3,3,3,3 (PP=8)
BACKEND=${BACKEND:-nccl}

"$PYTHON" -m torch.distributed.run \
    --nproc_per_node "$NPUS_PER_NODE" --nnodes "$NNODES" --node_rank "$NODE_RANK" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m mindr1.training.sft \
    --use-mcore-models \
    --tensor-model-parallel-size "${TP}" \
    --pipeline-model-parallel-size "${PP}" \
    --num-layer-list "$NUM_LAYER_LIST" \
    --num-layers 28 \
    --hidden-size 3584 \
    --ffn-hidden-size 18944 \
    --num-attention-heads 28 \
    --max-position-embeddings "${SEQ_LEN}" \
    --seq-length "${SEQ_LEN}" \
    --disable-bias-linear \
    --add-qkv-bias \
    --group-query-attention \
    --num-query-groups 4 \
    --use-flash-attn \
    --swiglu \
    --use-fused-swiglu \
    --normalization RMSNorm \
    --norm-epsilon 1e-6 \
    --use-fused-rmsnorm \
    --position-embedding-type rope \
    --rotary-base 1000000 \
    --use-fused-rotary-pos-emb \
    --untie-embeddings-and-output-weights \
    --micro-batch-size "${MBS}" \
    --global-batch-size "${GBS}" \
    --make-vocab-size-divisible-by 1 \
    --padded-vocab-size 152064 \
    --tokenizer-type PretrainedFromHF \
    --tokenizer-name-or-path "${TOKENIZER_PATH}" \
    --attention-dropout 0.0 \
    --hidden-dropout 0.0 \
    --train-iters 2000 \
    --lr 1.25e-6 \
    --lr-decay-style cosine \
    --min-lr 1.25e-7 \
    --lr-warmup-fraction 0.01 \
    --init-method-std 0.01 \
    --weight-decay 0.0 \
    --clip-grad 1.0 \
    --adam-beta1 0.9 \
    --adam-beta2 0.95 \
    --initial-loss-scale 4096 \
    --no-gradient-accumulation-fusion \
    --no-masked-softmax-fusion \
    --attention-softmax-in-fp32 \
    --bf16 \
    --data-path "$DATA_PATH" \
    --split 100,0,0 \
    --no-load-optim \
    --no-load-rng \
    --no-save-optim \
    --no-save-rng \
    --seed 1234 \
    --log-interval 1 \
    --save-interval 2000 \
    --eval-interval 2000 \
    --eval-iters 0 \
    --log-throughput \
    --finetune \
    --stage sft \
    --is-instruction-dataset \
    --variable-seq-lengths \
    --tokenizer-not-use-fast \
    --prompt-type qwen \
    --load "${CKPT_LOAD_DIR}" \
    --save "${CKPT_SAVE_DIR}" \
    --distributed-backend "$BACKEND" \
    "$@"
