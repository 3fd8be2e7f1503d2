"""YAML -> typed dataclass configs, with a ``defaults:`` list and ``key.sub=value`` overrides.

The one config system of every stage:

* A config is a (nested) dataclass; each field carries a docstring (a string literal right after
  it, read by :func:`field_docs`) and ``__post_init__`` validates values with messages naming the key.
* A YAML file may start with ``defaults:``, a list of entries merged *before* the file's own keys:
  ``- model: qwen25-7b`` loads ``configs/model/qwen25-7b.yaml`` under the key ``model``;
  ``- base.yaml`` (a plain string) merges another file of the same directory at the top level.
* ``${a.b}`` interpolation is resolved by OmegaConf.
* Command-line overrides ``a.b.c=value`` are parsed as YAML scalars (``lr=1e-5``, ``flag=true``,
  ``xs=[1,2]``) and applied last.
* Unknown keys and values of the wrong type raise :class:`ConfigError` naming the dotted key and
  the file it came from.
* Numeric fields declare their range with :func:`ranged` (``micro_batch_size: int = ranged(4, ge=1)``);
  :func:`build` checks every value against it, and every float is finite, before any
  ``__post_init__`` runs, so a nonsense value is refused with its key, value and range at load.
* YAML anchors and aliases are refused before anything is composed (their expansion is unbounded:
  9 levels of 10 references are a billion nodes), ``${...}`` interpolation is refused when it
  would expand past :data:`MAX_EXPANDED`, and a ``defaults:`` cycle is named.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

T = TypeVar("T")

CONFIGS_ROOT = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the dotted key (and file)."""


# ----------------------------------------------------------------------------- declared ranges

@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: an interval (either end open, closed or absent) plus
    ``also``, special values outside it (``top_k: -1`` meaning off). Floats must be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    also: tuple = ()

    def __contains__(self, value) -> bool:
        if value in self.also:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def __str__(self) -> str:
        lo = (f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else None)
        hi = (f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else None)
        if lo and hi:
            text = f"in {lo}, {hi}"
        elif lo:
            text = f"{'>=' if self.ge is not None else '>'} {lo[1:]}"
        elif hi:
            text = f"{'<=' if self.le is not None else '<'} {hi[:-1]}"
        else:
            text = "a finite number"
        return text + "".join(f" or {v!r}" for v in self.also)

    def check(self, value: Any, key: str) -> None:
        """Raise naming ``key``, ``value`` and the range unless ``value`` (or each item of a list) fits."""
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            if item is None or isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if item not in self:
                where = f"{key}[{i}]" if items is value else key
                raise ConfigError(f"{where}: {item!r} is out of range; expected {self}")

    def argtype(self, convert: Callable[[str], Any] = int) -> Callable[[str], Any]:
        """An argparse ``type=`` that converts with ``convert`` and checks this range."""
        import argparse

        def parse(text: str):
            try:
                value = convert(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {getattr(convert, '__name__', 'a value')}, "
                                                 f"got {text!r}") from None
            if value not in self:
                raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected {self}")
            return value
        parse.__name__ = getattr(convert, "__name__", "value")
        return parse


def ranged(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           also: tuple = ()) -> Any:
    """A dataclass field with a declared :class:`Range` (checked by :func:`build`, shown by :func:`explain`)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"range": Range(ge=ge, gt=gt, le=le, lt=lt, also=tuple(also))})


def field_range(cls: type, name: str) -> Range | None:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("range")
    return None


def checkpoint_retention(keep_last_n: int | None, save_total_limit: int | None, prefix: str = "") -> int | None:
    """``keep_last_n`` with its alias ``save_total_limit`` folded in (both set must agree)."""
    if keep_last_n is not None and save_total_limit is not None and keep_last_n != save_total_limit:
        raise ConfigError(f"{prefix}keep_last_n ({keep_last_n}) and its alias {prefix}save_total_limit "
                          f"({save_total_limit}) disagree; set one")
    return keep_last_n if keep_last_n is not None else save_total_limit


# ----------------------------------------------------------------------------- YAML side

#: Most scalars and characters a config may expand to through ``${...}`` interpolation.
MAX_EXPANDED = 1_000_000


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases while composing, before any node is shared."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent) or anchor is not None:
            mark = event.start_mark
            raise ConfigError(f"line {mark.line + 1}: YAML anchors and aliases (&{anchor or '...'} / "
                              f"*{anchor or '...'}) are not accepted in configs; repeat the value or use "
                              "a defaults: entry")
        return super().compose_node(parent, index)


def safe_yaml(text: str) -> Any:
    """``yaml.safe_load`` without anchors and aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = safe_yaml(path.read_text()) or {}
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_group_file(group: str, name: str, here: Path) -> Path:
    name = name if name.endswith((".yaml", ".yml")) else name + ".yaml"
    for root in (here / group, here.parent / group, CONFIGS_ROOT / group):
        candidate = root / name
        if candidate.exists():
            return candidate
    raise ConfigError(f"{here}: defaults entry '{group}: {name}' not found under {here / group} "
                      f"or {CONFIGS_ROOT / group}")


def load_yaml_tree(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and everything its ``defaults:`` list pulls in, merged into one dict."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in _chain[_chain.index(path):] + (path,))
        raise ConfigError(f"{path}: defaults cycle: {cycle}")
    _chain = _chain + (path,)
    data = _read_yaml(path)
    defaults = data.pop("defaults", []) or []
    if not isinstance(defaults, list):
        raise ConfigError(f"{path}: 'defaults' must be a list")
    merged: dict = {}
    for entry in defaults:
        if isinstance(entry, str):
            if entry == "_self_":
                continue
            merged = _deep_merge(merged, load_yaml_tree(path.parent / entry, _chain))
        elif isinstance(entry, dict) and len(entry) == 1:
            (group, name), = entry.items()
            sub = load_yaml_tree(_resolve_group_file(group, str(name), path.parent), _chain)
            merged = _deep_merge(merged, {group: sub})
        else:
            raise ConfigError(f"{path}: defaults entry {entry!r} must be 'file.yaml' or 'group: name'")
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("+")
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = safe_yaml(raw) if raw.strip() else ""
    except ConfigError as exc:
        raise ConfigError(f"override {key}: {exc}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            nxt = dict(nxt) if isinstance(nxt, dict) else {}
            node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return data


_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")


def _check_expansion(data: dict) -> None:
    """Refuse ``${...}`` references that would expand past :data:`MAX_EXPANDED` (each reference
    copies its target, so a few nested levels multiply into billions), measured in linear time."""
    memo: dict[str, int] = {}

    def lookup(ref: str):
        node = data
        for part in ref.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def size(node, key: str, active: tuple) -> int:
        if isinstance(node, dict):
            return 1 + sum(size(v, f"{key}.{k}".lstrip("."), active) for k, v in node.items())
        if isinstance(node, list):
            return 1 + sum(size(v, f"{key}[{i}]", active) for i, v in enumerate(node))
        if not isinstance(node, str) or "${" not in node:
            return 1
        total = len(node)
        for ref in _INTERPOLATION.findall(node):
            ref = ref.strip()
            if ref in active:
                raise ConfigError(f"{key}: interpolation cycle through ${{{ref}}}")
            if ref not in memo:
                target = lookup(ref)
                memo[ref] = 1 if target is None else size(target, ref, active + (ref,))
            total += memo[ref]
            if total > MAX_EXPANDED:
                raise ConfigError(f"{key}: ${{...}} interpolation expands to more than {MAX_EXPANDED:,} "
                                  "scalars/characters; refused")
        return total

    if size(data, "", ()) > MAX_EXPANDED:
        raise ConfigError(f"config expands to more than {MAX_EXPANDED:,} scalars/characters through "
                          "${...} interpolation; refused")


def _interpolate(data: dict) -> dict:
    from omegaconf import OmegaConf

    if "${" not in repr(data):
        return data
    _check_expansion(data)
    return OmegaConf.to_container(OmegaConf.create(data), resolve=True)


# ----------------------------------------------------------------------------- dataclass side

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting int -> float and str -> Path)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and origin is list:
            # "a,b,c" on the command line for a list field
            value = [v for v in str(value).split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        return Path(value)
    return value


def build(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys by their dotted name."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}"
                          + (f" (and {unknown[1:]})" if len(unknown) > 1 else "")
                          + f"; known keys{' of ' + prefix if prefix else ''}: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
        declared = fields[name].metadata.get("range")
        if declared is not None:
            declared.check(kwargs[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> T:
    """Load ``cls`` from a YAML file (with its defaults list), then apply ``overrides``."""
    data = dict(base or {})
    if path is not None:
        data = _deep_merge(data, load_yaml_tree(path))
    data = apply_overrides(data, list(overrides or []))
    data = _interpolate(data)
    try:
        return build(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def to_dict(cfg: Any) -> dict:
    """A plain (YAML-safe) dict of a config dataclass."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(cfg)


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written right after each field of dataclass ``cls`` (attribute docstrings)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for stmt, nxt in zip(body, body[1:] + [None]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                        and isinstance(nxt.value.value, str):
                    docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def explain(cls: type, prefix: str = "") -> list[str]:
    """One line per (nested) field: dotted key, type, default and its docstring."""
    lines = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{key}: ({tp.__name__}) {docs.get(f.name, '')}")
            lines.extend(explain(tp, prefix=key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "<required>")
        declared = f.metadata.get("range")
        limits = f" [{declared}]" if declared is not None else ""
        lines.append(f"{key}: {_type_name(tp)} = {default!r}{limits}  # {docs.get(f.name, '')}")
    return lines
