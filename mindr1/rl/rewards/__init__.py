"""Rule-based rewards: the verifier registry (`acc`, `format`, `strict_format`) and the
weighted combination into per-sample rewards.

Importing this package loads only the standard library: math-verify and sympy are imported by
the worker process that `acc` starts on first use (see `math_checker.py`).
"""
from .registry import compute_rewards, get_verifier, list_verifiers, register_verifier, reward_metrics
from . import verifiers as _builtin  # noqa: F401  (registers the built-in verifiers)

__all__ = ["compute_rewards", "get_verifier", "list_verifiers", "register_verifier", "reward_metrics"]
