"""mindr1: the DeepSeek-R1 recipe (SFT, GRPO, rejection sampling) on Megatron TP/PP, Ray and vLLM.

torch is deliberately not pinned here: `make install` installs torch==2.13.0 first (the CPU wheel on
machines without a GPU), and a GPU/NPU user's own torch build is kept.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "torch>=2.4",
    "megatron-core==0.16.1",
    "transformers>=4.56,<6",
    "safetensors>=0.5",
    "tokenizers>=0.21",
    "sentencepiece>=0.2",
    "ray[default]==2.60.0",
    "omegaconf>=2.3,<2.4",
    "math-verify>=0.8",
    "pyarrow>=17",
    "psutil>=5.9",
    "gguf>=0.10",
    "accelerate>=1.0",
    "numpy>=1.26",
    "tqdm>=4.66",
    "tensorboard>=2.17",
    "matplotlib>=3.8",
    "pyyaml>=6",
]

EXTRAS = {
    # reasoning-gym: the generated arithmetic tasks of the R1-Zero CPU example and its test.
    "dev": ["pytest>=8", "pytest-timeout>=2.3", "reasoning-gym==0.1.25", "gigatoken==0.10.0"],
    "gpu": ["vllm>=0.11", "transformer-engine[pytorch]>=2.4"],
    # MindSpeed is installed from Ascend's own repository (see README), not PyPI.
    "npu": ["torch-npu"],
    # gigatoken: preprocessing's tokenizer for byte-level BPE tokenizer.json files (same ids as
    # tokenizers, several times faster); without it preprocessing uses tokenizers.
    "fast-tokenizer": ["gigatoken==0.10.0"],
}

setup(
    name="mindr1",
    version="0.1.0",
    description=__doc__.splitlines()[0],
    packages=find_packages(include=["mindr1", "mindr1.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["mindr1=mindr1.cli:main"]},
    include_package_data=True,
)
