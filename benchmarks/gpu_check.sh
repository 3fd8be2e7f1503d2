#!/usr/bin/env bash
# One-shot GPU check of mindr1: install, correctness on CUDA, GRPO with the engine, figures; one report.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # on the GPU machine (OUT_DIR default: $OUT, else ./gpu_check_out)
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh D  # the same steps on the CPU (CI: tests/e2e/test_gpu_check_dry.py)
#
# Every step runs in its own process under `timeout`; a failure, a crash or a hang is recorded and
# the next step runs. The whole run keeps to GPU_CHECK_BUDGET_S (default 540 s on a GPU): a step
# that would start with less than 20 s left is recorded as skipped. OUT_DIR gets gpu_report.json,
# gpu_summary.txt and gpu_check_logs.txt (three files: the device tool brings back at most eight).
#
# Environment: GPU_CHECK_STEPS="a b" runs only those steps (install always runs);
# GPU_CHECK_PYTHON the interpreter whose packages (the machine's GPU torch) the venv keeps
# (default python3); GPU_CHECK_VENV (default .venv; $WORK/venv in the dry run); GPU_CHECK_WORK
# (default /tmp/mindr1-gpu-check); GPU_CHECK_STAGE, where stage.sh left carried wheels
# (default /tmp/mindr1-stage, plus any .gpucarry/N carried with this call).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
DRY=${GPU_CHECK_DRY:-0}
OUT_DIR=${1:-${OUT:-$REPO/gpu_check_out}}
WORK=${GPU_CHECK_WORK:-/tmp/mindr1-gpu-check}
STAGE=${GPU_CHECK_STAGE:-/tmp/mindr1-stage}
BASE_PY=${GPU_CHECK_PYTHON:-python3}
if [ "$DRY" = 1 ]; then
    VENV=${GPU_CHECK_VENV:-$WORK/venv}
    BUDGET=${GPU_CHECK_BUDGET_S:-900}
    export MINDR1_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES=""
else
    VENV=${GPU_CHECK_VENV:-$REPO/.venv}
    BUDGET=${GPU_CHECK_BUDGET_S:-540}
    export MINDR1_CACHE=${MINDR1_CACHE:-$WORK/cache}
fi
export GPU_CHECK_DRY=$DRY GPU_CHECK_WORK=$WORK PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
START=$(date +%s)
DEADLINE=$((START + BUDGET))
mkdir -p "$OUT_DIR" "$WORK/logs"
rm -rf "$WORK/steps"
mkdir -p "$WORK/steps"
echo "[gpu_check] $(date -u +%FT%TZ) dry=$DRY repo=$REPO work=$WORK out=$OUT_DIR budget=${BUDGET}s"

# A step that left no result (killed by timeout, crashed interpreter) gets one written here.
record_missing() {  # name rc seconds
    "$BASE_PY" - "$WORK/steps/$1.json" "$1" "$2" "$3" "$WORK/logs/$1.log" <<'EOF'
import json, sys
path, name, rc, secs, log = sys.argv[1:]
try:
    tail = open(log, errors="replace").read()[-3000:]
except OSError:
    tail = ""
why = f"timed out (killed after {secs} s)" if rc in ("124", "137") else f"exited with code {rc} without a result"
json.dump({"name": name, "status": "failed", "reason": why, "checks": [], "figures": {}, "details": {"log_tail": tail},
           "seconds": float(secs)}, open(path, "w"), indent=1)
EOF
}

record_skipped() {  # name reason
    "$BASE_PY" -c 'import json,sys; json.dump({"name": sys.argv[2], "status": "skipped", "reason": sys.argv[3], "checks": [], "figures": {}, "details": {}, "seconds": 0.0}, open(sys.argv[1], "w"))' \
        "$WORK/steps/$1.json" "$1" "$2"
}

run_step() {  # name limit_s command...
    local name=$1 limit=$2
    shift 2
    if [ -n "${GPU_CHECK_STEPS:-}" ] && [ "$name" != install ] && ! [[ " $GPU_CHECK_STEPS " == *" $name "* ]]; then
        return
    fi
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt 20 ]; then
        record_skipped "$name" "out of the time budget (GPU_CHECK_BUDGET_S=$BUDGET)"
        echo "[gpu_check] $name: skipped (time budget)"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0
    t0=$(date +%s)
    echo "[gpu_check] $name: start (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    local rc=$?
    [ -f "$WORK/steps/$name.json" ] || record_missing "$name" "$rc" "$(( $(date +%s) - t0 ))"
    grep -h "^\[gpu_check\] $name:" "$WORK/logs/$name.log" || echo "[gpu_check] $name: rc=$rc (see logs)"
}

# ---------------------------------------------------------------- install: a venv that keeps the machine's torch
make_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$BASE_PY" -m venv --without-pip "$VENV" || return 1
    fi
    local site
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    # The base interpreter may itself be a venv (the image's /opt/torch/.venv): --system-site-packages
    # would reach the system Python under it, not its torch, so its site dirs are added by a .pth.
    "$BASE_PY" -c 'import sysconfig; p = sysconfig.get_paths(); print("\n".join(dict.fromkeys([p["purelib"], p["platlib"]])))' \
        >"$site/zz_base_site.pth" || return 1
    echo "$REPO" >"$site/00_mindr1_src.pth"  # the checkout, as an editable install would
}
t0=$(date +%s)
if make_venv >"$WORK/logs/venv.log" 2>&1; then
    VPY=$VENV/bin/python
else
    VPY=$BASE_PY
    echo "[gpu_check] venv: could not be made (see $WORK/logs/venv.log); steps use $BASE_PY"
fi
stages=("$STAGE")
if [ "$DRY" != 1 ]; then  # carried loads hold wheels for the device's Python 3.12, not this one
    for d in "$REPO"/.gpucarry/*/; do [ -d "$d" ] && stages+=("$d"); done
fi
run_step install 240 "$VPY" "$REPO/benchmarks/gpu_check/install.py" install --stage "${stages[@]}" \
    --wheel-dir "$WORK/wheels" --cache "${MINDR1_CACHE:-$HOME/.cache/mindr1}"

# ---------------------------------------------------------------- the steps, most telling first
STEP=$REPO/benchmarks/gpu_check/run_step.py
run_step hf_logits_local         90 "$VPY" "$STEP" hf_logits_local
run_step parity_local_fp32      120 "$VPY" "$STEP" parity_local_fp32
run_step hf_logits_te            60 "$VPY" "$STEP" hf_logits_te
run_step sft_figures            120 "$VPY" "$STEP" sft_figures
run_step weight_sync_figures     90 "$VPY" "$STEP" weight_sync_figures
run_step grpo_tiny_colocated    120 "$VPY" "$STEP" grpo_tiny_colocated
run_step grpo_smollm2_colocated 150 "$VPY" "$STEP" grpo_smollm2_colocated
run_step grpo_tiny_separate     120 "$VPY" "$STEP" grpo_tiny_separate
run_step grpo_smollm2_separate  150 "$VPY" "$STEP" grpo_smollm2_separate
run_step convert_engine         120 "$VPY" "$STEP" convert_engine

"$BASE_PY" "$REPO/benchmarks/gpu_check/report.py" --work "$WORK" --out "$OUT_DIR" --started "$START"
