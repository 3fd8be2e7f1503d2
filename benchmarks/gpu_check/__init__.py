"""The one-shot GPU check (benchmarks/gpu_check.sh): its steps, install helpers and report."""
