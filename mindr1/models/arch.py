"""Model families (Qwen2/Qwen2.5, Llama/SmolLM2) as one plain description: :class:`ModelArch`.

A ModelArch is read from an HF ``config.json`` or a YAML under ``configs/model/`` and is what
every other layer uses: the Megatron builder (``mindr1.models.megatron``), the HF <-> Megatron
state-dict adapter (``mindr1.models.adapter``), conversion and weight sync.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, Optional

from mindr1.config import ConfigError, build, field_range, load_yaml_tree, ranged

FAMILIES = ("qwen2", "llama")
_HF_ARCHITECTURE = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_HF_MODEL_TYPE_TO_FAMILY = {"qwen2": "qwen2", "llama": "llama", "mistral": "llama"}


@dataclass
class ModelArch:
    """A decoder-only transformer of the Qwen2 or Llama family."""

    family: Literal["qwen2", "llama"] = "llama"
    """Model family: qwen2 (Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen) or llama (Llama 2/3, SmolLM2)."""
    num_layers: int = ranged(2, ge=1)
    """Number of transformer layers (HF num_hidden_layers)."""
    hidden_size: int = ranged(64, ge=1)
    """Model width."""
    ffn_hidden_size: int = ranged(128, ge=1)
    """Width of the SwiGLU MLP (HF intermediate_size)."""
    num_attention_heads: int = ranged(4, ge=1)
    """Query heads."""
    num_query_groups: int = ranged(2, ge=1)
    """Key/value heads (GQA groups; HF num_key_value_heads)."""
    kv_channels: Optional[int] = ranged(None, ge=1)
    """Head dimension; hidden_size // num_attention_heads when unset."""
    vocab_size: int = ranged(256, ge=1)
    """True vocabulary size (rows of the HF embedding); padded for TP by padded_vocab."""
    max_position_embeddings: int = ranged(2048, ge=1)
    """Longest sequence RoPE is set up for."""
    rope_theta: float = ranged(10000.0, gt=0)
    """RoPE base."""
    rope_scaling: Optional[dict] = None
    """HF rope_scaling dict (e.g. Llama-3 'llama3' type); None for plain RoPE."""
    rms_norm_eps: float = ranged(1e-6, gt=0)
    """RMSNorm epsilon."""
    add_qkv_bias: bool = False
    """Bias on the q/k/v projections (true for Qwen2)."""
    tie_word_embeddings: bool = False
    """Output layer shares the input embedding (SmolLM2, Qwen2.5-0.5B)."""
    make_vocab_size_divisible_by: int = ranged(128, ge=1)
    """Megatron pads the vocabulary to a multiple of this times TP."""
    padded_vocab_size: Optional[int] = ranged(None, ge=1)
    """Explicit padded vocabulary size; overrides make_vocab_size_divisible_by."""
    bos_token_id: Optional[int] = ranged(None, ge=0)
    """From the HF config; kept for export."""
    eos_token_id: Optional[int | list] = ranged(None, ge=0)
    """From the HF config; kept for export."""
    torch_dtype: str = "float32"
    """The dtype the HF weights are stored in."""
    extra_hf_config: dict = field(default_factory=dict)
    """Other HF config.json fields carried through conversion unchanged."""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"family: unknown model family {self.family!r}; supported: {list(FAMILIES)}")
        if self.kv_channels is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by "
                                  f"num_attention_heads {self.num_attention_heads}; set kv_channels")
            self.kv_channels = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_query_groups:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not divisible by "
                              f"num_query_groups {self.num_query_groups}")

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    def padded_vocab(self, tp: int = 1) -> int:
        """Megatron's padded vocabulary size for tensor-parallel size ``tp``."""
        if self.padded_vocab_size is not None:
            if self.padded_vocab_size < self.vocab_size:
                raise ConfigError(f"padded_vocab_size {self.padded_vocab_size} < vocab_size {self.vocab_size}")
            if self.padded_vocab_size % tp:
                raise ConfigError(f"padded_vocab_size {self.padded_vocab_size} is not divisible by TP={tp}")
            return self.padded_vocab_size
        multiple = self.make_vocab_size_divisible_by * tp
        return int(math.ceil(self.vocab_size / multiple) * multiple)

    def num_params(self) -> int:
        h, f, d = self.hidden_size, self.ffn_hidden_size, self.kv_channels
        attn = h * d * (self.num_attention_heads * 2 + self.num_query_groups * 2)
        if self.add_qkv_bias:
            attn += d * (self.num_attention_heads + 2 * self.num_query_groups)
        layer = attn + 3 * h * f + 2 * h
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + emb + h

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "ModelArch":
        return replace(self, **changes)

    # ------------------------------------------------------------------ HF config.json

    @classmethod
    def from_hf_config(cls, config: dict | str | Path, family: str | None = None) -> "ModelArch":
        """Read an HF config (dict, config.json path, or a directory holding one)."""
        source = ""
        if not isinstance(config, dict):
            path = Path(config)
            path = path / "config.json" if path.is_dir() else path
            source = f"{path}: "
            if not path.exists():
                raise ConfigError(f"{path}: config.json not found")
            try:
                config = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        cfg = dict(config)
        if family is None:
            model_type = cfg.get("model_type", "")
            family = _HF_MODEL_TYPE_TO_FAMILY.get(model_type)
            if family is None:
                raise ConfigError(f"{source}model_type {model_type!r} is not a supported family "
                                  f"(supported: {sorted(_HF_MODEL_TYPE_TO_FAMILY)}); pass --model-type-hf")
        elif family not in FAMILIES:
            raise ConfigError(f"{source}unknown model family {family!r}; supported: {list(FAMILIES)}")
        required = ["num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size"]
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ConfigError(f"{source}missing required field(s) {missing}")
        _check_hf_numbers(cfg, source)
        consumed = set(required) | {"num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta",
                                    "rope_scaling", "rope_parameters", "rms_norm_eps", "attention_bias", "tie_word_embeddings",
                                    "bos_token_id", "eos_token_id", "torch_dtype", "model_type", "architectures",
                                    "hidden_act", "transformers_version", "dtype"}
        rope = dict(cfg.get("rope_parameters") or {})
        rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        rope_scaling = cfg.get("rope_scaling")
        if rope_scaling is None and rope.get("rope_type", "default") != "default":
            rope_scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        add_bias = family == "qwen2" or bool(cfg.get("attention_bias", False))
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        return cls(
            family=family,
            num_layers=cfg["num_hidden_layers"],
            hidden_size=cfg["hidden_size"],
            ffn_hidden_size=cfg["intermediate_size"],
            num_attention_heads=cfg["num_attention_heads"],
            num_query_groups=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            kv_channels=head_dim,
            vocab_size=cfg["vocab_size"],
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            add_qkv_bias=add_bias,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
            torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
            extra_hf_config={k: v for k, v in cfg.items() if k not in consumed},
        )

    def to_hf_config(self) -> dict:
        """An HF config.json dict for this architecture (transformers and vLLM load it)."""
        cfg = dict(self.extra_hf_config)
        cfg.update({
            "architectures": [_HF_ARCHITECTURE[self.family]],
            "model_type": self.family,
            "hidden_act": "silu",
            "num_hidden_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.ffn_hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_query_groups,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": self.torch_dtype,
        })
        if self.kv_channels != self.hidden_size // self.num_attention_heads:
            cfg["head_dim"] = self.kv_channels
        rope = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling is not None:
            cfg["rope_scaling"] = self.rope_scaling
            rope.update(self.rope_scaling)
        cfg["rope_parameters"] = rope
        if self.family == "llama":
            cfg["attention_bias"] = self.add_qkv_bias
            cfg.setdefault("mlp_bias", False)
        elif not self.add_qkv_bias:
            raise ConfigError("a qwen2 model without qkv bias cannot be exported as Qwen2ForCausalLM")
        if self.bos_token_id is not None:
            cfg["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            cfg["eos_token_id"] = self.eos_token_id
        return cfg

    # ------------------------------------------------------------------ YAML

    @classmethod
    def from_yaml(cls, name_or_path: str | Path) -> "ModelArch":
        """Load ``configs/model/<name>.yaml`` or a YAML path."""
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml"):  # a name, possibly with dots ("qwen25-0.5b")
            from mindr1.config.loader import CONFIGS_ROOT
            path = CONFIGS_ROOT / "model" / f"{name_or_path}.yaml"
        data = load_yaml_tree(path)
        try:
            return build(cls, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


# config.json key -> ModelArch field whose declared range it must satisfy.
_HF_NUMBERS = {"num_hidden_layers": "num_layers", "hidden_size": "hidden_size", "intermediate_size": "ffn_hidden_size",
               "num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_query_groups",
               "head_dim": "kv_channels", "vocab_size": "vocab_size", "max_position_embeddings": "max_position_embeddings",
               "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps", "bos_token_id": "bos_token_id",
               "eos_token_id": "eos_token_id"}


def _check_hf_numbers(cfg: dict, source: str) -> None:
    """config.json sizes must be JSON integers (not "64" or 2.5) in ModelArch's declared ranges,
    checked before any of them divides another."""
    for key, name in _HF_NUMBERS.items():
        value = cfg.get(key)
        if value is None:
            continue
        tp = {f.name: f.type for f in fields(ModelArch)}[name]
        want_int = "float" not in str(tp)
        items = value if isinstance(value, list) and key == "eos_token_id" else [value]
        for item in items:
            ok = isinstance(item, int) if want_int else isinstance(item, (int, float))
            if isinstance(item, bool) or not ok:
                raise ConfigError(f"{source}{key}: expected {'an integer' if want_int else 'a number'}, "
                                  f"got {item!r} ({type(item).__name__})")
        try:
            field_range(ModelArch, name).check(value, key)
        except ConfigError as exc:
            raise ConfigError(f"{source}{exc}") from None


def load_arch(source: str | Path | dict | ModelArch, family: str | None = None) -> ModelArch:
    """A ModelArch from an HF dir / config.json, a YAML name or path, a dict, or itself."""
    if isinstance(source, ModelArch):
        return source
    if isinstance(source, dict):
        return build(ModelArch, source)
    path = Path(source)
    if path.is_dir() or path.name == "config.json" or path.suffix == ".json":
        return ModelArch.from_hf_config(path, family=family)
    return ModelArch.from_yaml(source)
