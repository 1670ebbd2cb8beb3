"""Loading a config: YAML in, `--set` overrides, every value validated against the schema.

Every value that enters a config (YAML file, `--set`, a CLI option) goes through `set_value`,
which validates it and names the file, line and key when it is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nmt.config.schema import SECTIONS, Config
from nmt.errors import NmtError


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _unknown(kind: str, name: str, valid: Sequence[str], where: str) -> NmtError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return NmtError(f"unknown {kind} `{name}`", where, f"{hint}valid {kind}s: {', '.join(valid)}")


def _check(key: str, f: dataclasses.Field, typ: type, value: Any, where: str) -> Any:
    """Return `value` converted to the field's type, or raise an NmtError that says why not."""
    meta = f.metadata
    if typ is float and isinstance(value, str):  # PyYAML reads 5e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[typ]
    if not ok:
        name = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[typ]
        fix = "quote it to make it a string" if typ is str else f"give {name}"
        raise NmtError(f"`{key}` must be {name}, got {value!r}", where, fix)
    value = typ(value)
    if typ is float and not math.isfinite(value):
        raise NmtError(f"`{key}` must be a finite number, got {value!r}", where, "give a number")
    if meta["pattern"] and value and not re.fullmatch(meta["pattern"], value):
        raise NmtError(
            f"`{key}` may hold only letters, digits, `-` and `_` (it names files); got {value!r}",
            where,
            "use a plain code such as `en`, `pt-BR` or `zh_Hant`",
        )
    if meta["choices"] and value not in meta["choices"]:
        raise NmtError(
            f"`{key}` must be one of {', '.join(meta['choices'])}; got {value!r}",
            where,
            f"choose one of: {', '.join(meta['choices'])}",
        )
    problem = meta["check"] and meta["check"](value)
    if problem:
        raise NmtError(
            f"`{key}`: {problem}; got {value!r}", where, f"see `{key}` in docs/config.md"
        )
    lo, hi = meta["min"], meta["max"]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise NmtError(f"`{key}` must be {bounds}; got {value!r}", where, f"give a value {bounds}")
    return value


def set_value(cfg: Config, key: str, value: Any, where: str) -> None:
    """Validate `value` and store it at `key` ("section.name"); `where` is named in errors."""
    section, _, name = key.partition(".")
    if section not in SECTIONS:
        raise _unknown("section", section, list(SECTIONS), where)
    if not name:
        raise NmtError(
            f"`{section}` is a section, not a key",
            where,
            f"name a key in it: {section}.KEY=VALUE (its keys: {', '.join(_fields(section))})",
        )
    fields_ = _fields(section)
    if name not in fields_:
        raise _unknown(f"`{section}` key", name, list(fields_), where)
    typ = typing.get_type_hints(SECTIONS[section])[name]
    setattr(getattr(cfg, section), name, _check(key, fields_[name], typ, value, where))


def _yaml_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every `section` and `section.key` in a YAML text, for errors;
    one that appears twice is a YAMLError (YAML would keep the last one silently)."""
    lines: dict[str, int] = {}
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        return lines

    def note(name: str, node: yaml.Node) -> None:
        if name in lines:
            raise yaml.constructor.ConstructorError(
                problem=f"{name} appears twice (also on line {lines[name]})",
                problem_mark=node.start_mark,
            )
        lines[name] = node.start_mark.line + 1

    for sec_key, sec_val in root.value:
        note(sec_key.value, sec_key)
        if isinstance(sec_val, yaml.MappingNode):
            for key, _ in sec_val.value:
                note(f"{sec_key.value}.{key.value}", key)
    return lines


def config_from_dict(
    raw: Any, source: str = "<dict>", lines: dict[str, int] | None = None
) -> Config:
    """Build a validated Config from nested dicts; unknown sections or keys are errors."""
    lines = lines or {}
    cfg = Config()
    if raw is None:
        return cfg
    if not isinstance(raw, dict):
        raise NmtError(
            "a config must be a mapping of sections",
            source,
            f"write sections at the top level: {', '.join(SECTIONS)}",
        )
    for section, values in raw.items():
        where = f"{source}:{lines[section]}" if section in lines else source
        if section not in SECTIONS:
            raise _unknown("section", str(section), list(SECTIONS), where)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise NmtError(
                f"section `{section}` must be a mapping of keys to values", where,
                f"write `{section}:` and under it indented `key: value` lines",
            )  # fmt: skip
        for name, value in values.items():
            key = f"{section}.{name}"
            set_value(cfg, key, value, f"{source}:{lines[key]}" if key in lines else source)
    return cfg


def apply_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """Apply `section.key=value` strings (values parsed as YAML scalars: 5e-4, true, 'text')."""
    for item in overrides:
        key, eq, text = item.partition("=")
        where = f"--set {item}"
        if not eq:
            raise NmtError(
                "an override must look like section.key=value",
                where,
                "for example: --set train.batch_tokens=4000",
            )
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise NmtError(f"cannot parse the value: {exc}", where) from None
        set_value(cfg, key.strip(), value, where)
    return cfg


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when `path` is None), then apply `--set` overrides."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NmtError(
                "config file not found", str(path), "check the path; examples are in configs/"
            ) from None
        except IsADirectoryError:
            raise NmtError(
                "this config path is a directory", str(path), "name a YAML file, e.g. in configs/"
            ) from None
        except UnicodeDecodeError as exc:
            line = text_line(path.read_bytes(), exc.start)
            raise NmtError(
                "not UTF-8 text (corrupt, or another kind of file)", f"{path}:{line}",
                "name a YAML config saved as UTF-8",
            ) from None  # fmt: skip
        except OSError as exc:
            raise NmtError(f"cannot read it: {exc.strerror}", str(path)) from None
        try:
            raw, lines = yaml.safe_load(text), _yaml_lines(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise NmtError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}", where,
                "check the indentation, colons and quotes on that line and the one before",
            ) from None  # fmt: skip
        cfg = config_from_dict(raw, str(path), lines)
    return apply_overrides(cfg, overrides)


def text_line(data: bytes, offset: int) -> int:
    """The 1-based line number of byte `offset` in `data`."""
    return data.count(b"\n", 0, offset) + 1


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dicts, for YAML/JSON and checkpoints."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """The config as YAML, in schema order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def checked(key: str, value: Any, where: str) -> Any:
    """`value` validated as the config key `key` would be (for options that override a key
    for one call, e.g. `translate --alpha`)."""
    cfg = Config()
    set_value(cfg, key, value, where)
    section, _, name = key.partition(".")
    return getattr(getattr(cfg, section), name)


def default(key: str) -> Any:
    """The default value of `section.name`; the CLI shows it in `--help`."""
    section, _, name = key.partition(".")
    return getattr(SECTIONS[section](), name)
