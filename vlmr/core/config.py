"""Typed configs: pydantic-validated dataclasses loaded from YAML plus `key=value` overrides.

    cfg = load_config(FinetuneConfig, "configs/finetune/babyai_lora.yaml", ["max_steps=50"])
    cfg = load_config(PipelineConfig, "babyai_demo")      # a shipped config, found by name
    shipped_configs()                                     # {"pipeline/babyai_demo": Path, ...}

Unknown keys and wrong types raise `VlmrError` naming the key and the file.

Paths resolve two ways. A config's references to other configs (the keys a config class lists in
`CONFIG_REFS`, such as a pipeline's stage configs) resolve relative to the file that names them, so a
shipped pipeline finds its shipped stage configs wherever vlmr is installed. Everything else (outputs
such as runs/ and data/, and paths the user types) resolves relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from vlmr.core.errors import VlmrError
from vlmr.core.files import canonical_json, sha256_text

T = TypeVar("T")

# Range-checked field types. A bad value is reported against its own key ("key 'data.batch_size': Input
# should be greater than or equal to 1 (got 0)"), where a check in __post_init__ could only name the section.
PositiveInt = Annotated[int, Field(ge=1)]  # counts and sizes: batch sizes, image sizes
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # rates: finite and > 0 (a learning rate)


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


def shipped_config_dir() -> Path:
    """The folder of configs shipped with vlmr (package data `vlmr.configs`; `configs/` in a checkout)."""
    return Path(str(importlib.resources.files("vlmr.configs")))


def shipped_configs() -> dict[str, Path]:
    """Every shipped YAML config by name: {"pipeline/babyai_demo": path, "data/shapes": path, ...}."""
    root = shipped_config_dir()
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.glob("*/*.yaml"))}


def config_label(path: str | Path) -> str:
    """How reports name a config file: a shipped one by its name (`pipeline/babyai_demo`), so that no
    machine's install path lands in a report that travels; any other as given."""
    try:
        return Path(path).resolve().relative_to(shipped_config_dir().resolve()).with_suffix("").as_posix()
    except ValueError:
        return str(path)


def resolve_config(name: str | Path, kind: str | None = None) -> Path:
    """A config file from a path, or a shipped config by name.

    Tried in order: the path as given (relative to the working directory); a shipped config named
    `kind/name` ("babyai_demo" for `vlmr pipeline` is pipeline/babyai_demo.yaml), `name` ("data/shapes"),
    or a path under the shipped folder ("configs/data/shapes.yaml" from a checkout's README works anywhere).
    """
    path = Path(name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    stem = path.as_posix().removesuffix(".yaml")
    while stem.startswith(("../", "./")):  # a copied pipeline's "../data/shapes.yaml" means the shipped one
        stem = stem.split("/", 1)[1]
    stem = stem.removeprefix("configs/")
    for key in ([f"{kind}/{stem}"] if kind else []) + [stem]:
        if key in shipped:
            return shipped[key]
    matches = [k for k in shipped if k.split("/")[-1] == stem]
    if len(matches) == 1:
        return shipped[matches[0]]
    hint = (f"; shipped configs named {stem!r}: {', '.join(matches)} (give one of them)" if matches
            else "; `vlmr configs` lists the shipped configs")
    raise VlmrError(f"config file not found: {name}{hint}")


def _resolve_refs(data: dict, refs: tuple[str, ...], base: Path) -> None:
    """Point the config-reference keys `refs` ("shapes.config") of data at files next to `base`, in place."""
    for dotted in refs:
        *parents, last = dotted.split(".")
        node = data
        for k in parents:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(last), str) and (base / node[last]).is_file():
            node[last] = str((base / node[last]).resolve())  # else resolve_config: working dir, then shipped


def read_config_data(cls, name: str | Path, kind: str | None = None) -> tuple[Path, dict]:
    """The file a config name resolves to and its YAML, with cls's config references resolved next to it."""
    path = resolve_config(name, kind)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise VlmrError(f"{path} is not valid YAML: {e}") from None
    if isinstance(data, dict):
        _resolve_refs(data, getattr(cls, "CONFIG_REFS", ()), path.parent)
    return path, data


def load_config(cls: type[T], path: str | Path | None = None, overrides=(), kind: str | None = None) -> T:
    """Load a YAML config (a path, or a shipped config's name; see resolve_config) with key=value overrides."""
    data: dict = {}
    source = "overrides"
    if path is not None:
        path, data = read_config_data(cls, path, kind)
        source = str(path)
    data = apply_overrides(data, list(overrides))
    return build_config(cls, data, source)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_fingerprint(cfg, drop: tuple[str, ...] = ()) -> str:
    """sha256 of a config (dataclass or dict) as canonical JSON, without the top-level keys in `drop`."""
    d = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    return sha256_text(canonical_json({k: v for k, v in d.items() if k not in drop}))


def stage_main(argv, cls: type[T], run, prog: str, description: str, extra_args=None, kind: str | None = None) -> int:
    """The shared `vlmr STAGE CONFIG [key=value ...]` front end: parse, load the typed config, run."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", help="YAML config file, or a shipped config's name (`vlmr configs` lists them)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, nested keys with dots (model.arch=vlmr-tiny)")
    has_strict = "strict" in {f.name for f in dataclasses.fields(cls)}
    if has_strict:
        from vlmr.core.quality import STRICT_HELP

        parser.add_argument("--strict", action="store_true", help=STRICT_HELP)
    if extra_args:
        extra_args(parser)
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + (["strict=true"] if has_strict and args.strict else [])
    cfg = load_config(cls, args.config, overrides, kind=kind)
    extras = {k: v for k, v in vars(args).items() if k not in ("config", "overrides", "strict")}
    run(cfg, **extras)
    return 0
