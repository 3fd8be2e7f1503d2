"""Evaluation: (model, benchmark, sampling settings) -> pass@1 over k samples, pass@k, maj@k.

``benchmarks`` (the registry), ``metrics`` (pure functions), ``scoring`` (answer extraction and
math-verify, shared with GRPO's rewards), ``models`` (HF / Megatron inputs), ``runner`` (``mindr1
eval``), ``report`` (results.json/md/png, samples.jsonl, the resumable .partial log),
``decontaminate`` (n-gram overlap of training data with the benchmarks). Importing the package
imports none of them.
"""
