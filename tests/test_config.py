"""Typed configs: YAML + overrides, errors that name the key and the file."""

import pytest

from vlmr.core.config import config_dataclass, load_config
from vlmr.core.errors import VlmrError


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


def test_every_shipped_pipeline_and_rl_config_loads_with_its_stage_sections():
    """A typo in a shipped YAML (or a key a refactor renamed) fails here, not an hour into `make demo`."""
    from pathlib import Path

    from vlmr.calibrate.fit import CalibrateConfig
    from vlmr.finetune.train import FinetuneConfig
    from vlmr.rl.agent.ppo import PPOConfig
    from vlmr.rl.collect.collect import CollectConfig
    from vlmr.rl.experiments.compare import CompareConfig
    from vlmr.rl.experiments.pipeline import PipelineConfig
    from vlmr.rl.experiments.scaling import ScalingConfig, chain_config
    from vlmr.rl.experiments.stage_runner import stage_config

    for path in sorted(Path("configs/rl").glob("*.yaml")):
        load_config(CompareConfig if path.stem.startswith("compare") else PPOConfig, str(path))
    stages = {"shapes": CollectConfig, "domain": CollectConfig, "base": FinetuneConfig, "adapt": FinetuneConfig,
              "calibrate": CalibrateConfig, "compare": CompareConfig}
    pipelines = [load_config(PipelineConfig, str(p)) for p in sorted(Path("configs/pipeline").glob("*.yaml"))
                 if p.stem != "scaling"]
    scaling = load_config(ScalingConfig, "configs/pipeline/scaling.yaml")
    pipelines += [chain_config(scaling, m) for m in scaling.models]
    assert {p.name for p in pipelines} >= {"babyai_demo", "crafter", "scaling_vlmr-small"}
    for cfg in pipelines:
        for key, cls in stages.items():
            if getattr(cfg, key) is not None:
                stage_config(cls, getattr(cfg, key), {}, f"{cfg.name}/{key}")
