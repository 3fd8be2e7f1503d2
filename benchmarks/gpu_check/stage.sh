#!/usr/bin/env bash
# On the device machine, one call per load: copy a carried load (.gpucarry/N) to /tmp/mindr1-stage,
# where it waits (while the machine stays warm) for the install step of benchmarks/gpu_check.sh.
set -euo pipefail
dest=${GPU_CHECK_STAGE:-/tmp/mindr1-stage}
mkdir -p "$dest"
for load in "$@"; do
    [ -d "$load" ] || { echo "stage.sh: $load is not a folder (name it in the call's carry)" >&2; exit 2; }
    cp "$load"/* "$dest"/
    echo "staged $load: $(ls "$load" | wc -l) files; $(du -sh "$dest" | cut -f1) in $dest"
done
