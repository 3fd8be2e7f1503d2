"""Rejection sampling with MindSpeed-LLM's flags: ``--task generate_vllm | rejection_sampling | merge``.

A thin wrapper over ``mindr1 rejection-sample`` (``mindr1/sampling/rejection.py``).
"""
import sys

from mindr1.sampling.rejection import main

if __name__ == "__main__":
    sys.exit(main())
