"""The config system of every stage: typed dataclasses loaded from YAML (see loader.py)."""
from mindr1.config.loader import (ConfigError, apply_overrides, build, explain, field_docs, load_config,
                                  load_yaml_tree, to_dict)

__all__ = ["ConfigError", "apply_overrides", "build", "explain", "field_docs", "load_config",
           "load_yaml_tree", "to_dict"]
