"""Typed configs: pydantic-validated dataclasses loaded from YAML plus `key=value` overrides.

    cfg = load_config(FinetuneConfig, "configs/finetune/babyai_lora.yaml", ["max_steps=50"])

Unknown keys and wrong types raise `VlmrError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from finetune.files import VlmrError

T = TypeVar("T")


def config_dataclass(cls):
    """A dataclass whose fields are validated and which rejects unknown keys."""
    return _pydantic_dataclass(cls, config=ConfigDict(extra="forbid", validate_assignment=True))


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise VlmrError(f"override {item!r} is not of the form key=value (for example max_steps=100)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                raise VlmrError(f"override {item!r}: {k!r} is not a section")
            node = node[k]
        node[keys[-1]] = value
    return data


def _field_names(cls, loc: tuple) -> list[str]:
    """Field names of the (nested) dataclass at `loc`, for 'did you mean' hints."""
    for part in loc[:-1]:
        if not dataclasses.is_dataclass(cls):
            return []
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        cls = hints.get(part)
        if isinstance(cls, str):
            return []
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def format_validation_error(cls, err: ValidationError, source: str) -> str:
    lines = [f"invalid config in {source}:"]
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) or "(top level)"
        if e["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            close = difflib.get_close_matches(loc[-1], _field_names(cls, loc), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            lines.append(f"  unknown key {key!r}{hint}")
        else:
            lines.append(f"  key {key!r}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def build_config(cls: type[T], data: dict, source: str = "<dict>") -> T:
    if not isinstance(data, dict):
        raise VlmrError(f"{source}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise VlmrError(format_validation_error(cls, e, source)) from None


def load_config(cls: type[T], path: str | Path | None = None, overrides=()) -> T:
    data: dict = {}
    source = "overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise VlmrError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise VlmrError(f"{path} is not valid YAML: {e}") from None
    data = apply_overrides(data, list(overrides))
    return build_config(cls, data, source)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def stage_main(argv, cls: type[T], run, prog: str, description: str, extra_args=None) -> int:
    """The shared `vlmr STAGE CONFIG [key=value ...]` front end: parse, load the typed config, run."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, nested keys with dots (model.arch=vlmr-tiny)")
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    cfg = load_config(cls, args.config, args.overrides)
    extras = {k: v for k, v in vars(args).items() if k not in ("config", "overrides")}
    run(cfg, **extras)
    return 0
