"""HF -> Megatron -> HF and Megatron re-shards are bit-identical (issue 3's acceptance checks)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mindr1.checkpoint import layout
from mindr1.checkpoint.convert import main
from mindr1.checkpoint.synthetic import write_random_hf_checkpoint
from mindr1.models import adapter as A
from mindr1.models.arch import ModelArch

REPO = Path(__file__).resolve().parents[2]
CONFIG_FIELDS = ("architectures", "model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
                 "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
                 "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id", "hidden_act")


def _hf_tensors(hf_dir: Path) -> dict[str, torch.Tensor]:
    get_hf, names = A.open_hf_checkpoint(hf_dir)
    return {n: get_hf(n) for n in names}


def _assert_same_hf(a_dir: Path, b_dir: Path):
    a, b = _hf_tensors(a_dir), _hf_tensors(b_dir)
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a_dir, b_dir))
    for f in CONFIG_FIELDS:
        assert ca.get(f) == cb.get(f), f
    assert ModelArch.from_hf_config(ca).rope_theta == ModelArch.from_hf_config(cb).rope_theta


def _convert(src: Path, dst: Path, load: str, save: str, tp: int = 1, pp: int = 1, *extra: str):
    argv = ["--load-model-type", load, "--save-model-type", save, "--load-dir", str(src), "--save-dir", str(dst),
            "--target-tensor-parallel-size", str(tp), "--target-pipeline-parallel-size", str(pp), "--no-fsync", *extra]
    assert main(argv) == 0
    return dst


def _assert_ranks_match_adapter(hf_dir: Path, mg_dir: Path, tp: int, pp: int):
    """Each rank's file alone holds exactly that rank's state dict (loadable rank by rank)."""
    arch = ModelArch.from_hf_config(hf_dir)
    get_hf, _ = A.open_hf_checkpoint(hf_dir)
    assert layout.read_latest(mg_dir) == "release"
    for p in range(pp):
        for t in range(tp):
            state = layout.load_shard(layout.shard_path(mg_dir, "release", t, p, pp))
            want = A.mcore_rank_state_dict_from_hf(arch, get_hf, t, tp, p, pp)
            assert sorted(state["model"]) == sorted(want)
            assert all(torch.equal(state["model"][k], want[k]) for k in want)
            assert state["args"]["tensor_model_parallel_size"] == tp
            assert state["args"]["mindr1_arch"]["num_layers"] == arch.num_layers


@pytest.mark.slow
def test_smollm2_tp3_pp2_round_trip_and_reshard(tmp_path):
    from mindr1.artifacts import smollm2_dir
    hf_dir = smollm2_dir()
    mg = _convert(hf_dir, tmp_path / "mg_t3p2", "hf", "mg", 3, 2)
    assert sorted(p.name for p in (mg / "release").iterdir()) == [f"mp_rank_{t:02d}_{p:03d}" for t in range(3)
                                                                   for p in range(2)]
    _assert_same_hf(hf_dir, _convert(mg, tmp_path / "hf_back", "mg", "hf"))
    assert (tmp_path / "hf_back" / "tokenizer.json").exists()
    resharded = _convert(mg, tmp_path / "mg_t1p3", "mg", "mg", 1, 3)
    _assert_same_hf(hf_dir, _convert(resharded, tmp_path / "hf_back2", "mg", "hf"))


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    arch = ModelArch.from_yaml("tiny-qwen2")  # qkv bias, untied embeddings, 4 layers, vocab 300
    return write_random_hf_checkpoint(tmp_path_factory.mktemp("qwen2") / "hf", arch, torch.bfloat16, seed=1,
                                      max_shard_bytes=150_000)


def test_random_qwen2_tp2_pp2_round_trip(qwen2_dir, tmp_path):
    mg = _convert(qwen2_dir, tmp_path / "mg", "hf", "mg", 2, 2)
    _assert_ranks_match_adapter(qwen2_dir, mg, 2, 2)
    back = _convert(mg, tmp_path / "hf", "mg", "hf", 1, 1, "--max-shard-size", "100KB")
    assert (back / "model.safetensors.index.json").exists()
    _assert_same_hf(qwen2_dir, back)
    from transformers import AutoModelForCausalLM
    ids = torch.tensor([[1, 17, 42, 299]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(qwen2_dir).eval()(ids).logits
        out = AutoModelForCausalLM.from_pretrained(back).eval()(ids).logits
    assert torch.equal(ref, out)


def test_random_qwen2_reshard_2x2_to_1x4_to_hf(qwen2_dir, tmp_path):
    mg = _convert(qwen2_dir, tmp_path / "mg22", "hf", "mg", 2, 2)
    mg14 = _convert(mg, tmp_path / "mg14", "mg", "mg", 1, 4)
    _assert_ranks_match_adapter(qwen2_dir, mg14, 1, 4)
    _assert_same_hf(qwen2_dir, _convert(mg14, tmp_path / "hf", "mg", "hf"))


def test_uneven_stages_dtype_cast_and_padding(qwen2_dir, tmp_path):
    mg = _convert(qwen2_dir, tmp_path / "mg", "hf", "mg", 2, 2, "--num-layer-list", "1,3", "--params-dtype", "fp32",
                  "--padded-vocab-size", "320")
    state = layout.load_shard(layout.shard_path(mg, "release", 1, 1, 2))
    assert {k.split(".")[2] for k in state["model"] if k.startswith("decoder.layers.")} == {"0", "1", "2"}
    assert state["model"][A.MC_OUTPUT].shape == (160, 64) and state["model"][A.MC_OUTPUT].dtype == torch.float32
    assert state["args"]["num_layer_list"] == [1, 3] and state["args"]["padded_vocab_size"] == 320
    back = _convert(mg, tmp_path / "hf", "mg", "hf", 1, 1, "--params-dtype", "bf16")
    _assert_same_hf(qwen2_dir, back)  # bf16 -> fp32 -> bf16 is exact


def test_tools_wrapper_runs(qwen2_dir, tmp_path):
    out = tmp_path / "mg"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert_ckpt.py"), "--use-mcore-models",
                           "--model-type", "GPT", "--load-model-type", "hf", "--save-model-type", "mg",
                           "--load-dir", str(qwen2_dir), "--save-dir", str(out), "--model-type-hf", "qwen2",
                           "--target-tensor-parallel-size", "2", "--tokenizer-model", str(qwen2_dir)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "latest_checkpointed_iteration.txt").read_text().strip() == "release"
    assert (out / "release" / "mp_rank_01" / "model_optim_rng.pt").exists()


def test_safetensors_files_are_complete(qwen2_dir):
    index = json.loads((qwen2_dir / "model.safetensors.index.json").read_text())
    for file in set(index["weight_map"].values()):
        with safe_open(str(qwen2_dir / file), "pt") as f:
            assert set(f.keys()) == {k for k, v in index["weight_map"].items() if v == file}
