"""The config system of every stage: typed dataclasses loaded from YAML (see loader.py)."""
from mindr1.config.loader import (ConfigError, Range, apply_overrides, build, explain, field_docs, field_range,
                                  load_config, load_yaml_tree, ranged, safe_yaml, to_dict)

__all__ = ["ConfigError", "Range", "apply_overrides", "build", "explain", "field_docs", "field_range", "load_config",
           "load_yaml_tree", "ranged", "safe_yaml", "to_dict"]
