"""Typed configs: YAML + overrides, errors that name the key and the file."""

import pytest

from finetune.config import config_dataclass, load_config
from finetune.files import VlmrError


@config_dataclass
class Inner:
    rank: int = 8  # LoRA rank


@config_dataclass
class Outer:
    name: str = "run"  # run name
    steps: int = 10  # optimiser steps
    inner: Inner | None = None  # optional section


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: demo\ninner:\n  rank: 4\n")
    cfg = load_config(Outer, path, ["steps=20", "inner.rank=16"])
    assert (cfg.name, cfg.steps, cfg.inner.rank) == ("demo", 20, 16)


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(VlmrError, match=r"c\.yaml(.|\n)*unknown key 'stepz'; did you mean steps"):
        load_config(Outer, path)


def test_wrong_type_names_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  rank: many\n")
    with pytest.raises(VlmrError, match=r"key 'inner.rank'.*integer.*'many'"):
        load_config(Outer, path)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(VlmrError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(VlmrError, match="not valid YAML"):
        load_config(Outer, tmp_path / "bad.yaml")
    with pytest.raises(VlmrError, match="key=value"):
        load_config(Outer, None, ["steps"])
