"""mindr1: the DeepSeek-R1 training recipe on Megatron TP/PP, Ray and vLLM.

Importing the package imports nothing heavy (no torch.distributed, Ray or vLLM set-up), so pure
modules (templates, GRPO math, verifiers, config) can be used and tested alone.
"""
__version__ = "0.1.0"
