"""Typed configuration: one schema, defaults defined once, YAML in, `--set` overrides out.

`schema` is where a key is added (a dataclass field with its default, help and valid range);
`loading` reads YAML and `--set` and validates every value against the schema; `reference`
writes docs/config.md from it. Callers import from here.
"""

from nmt.config.loading import (
    apply_overrides,
    checked,
    config_from_dict,
    config_to_dict,
    default,
    dump_config,
    load_config,
    set_value,
)
from nmt.config.reference import reference_markdown
from nmt.config.schema import (
    Config,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    ServeConfig,
    TrainConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "DecodeConfig",
    "ModelConfig",
    "ServeConfig",
    "TrainConfig",
    "apply_overrides",
    "checked",
    "config_from_dict",
    "config_to_dict",
    "default",
    "dump_config",
    "load_config",
    "reference_markdown",
    "set_value",
]
