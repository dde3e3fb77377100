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


@pytest.mark.parametrize("config, cls_path, override, key", [
    ("configs/finetune/babyai_lora.yaml", "vlmr.finetune.train:FinetuneConfig", "data.batch_size=0", "data.batch_size"),
    ("configs/finetune/babyai_lora.yaml", "vlmr.finetune.train:FinetuneConfig", "optim.lr=0", "optim.lr"),
    ("configs/finetune/babyai_lora.yaml", "vlmr.finetune.train:FinetuneConfig", "optim.lr=-1", "optim.lr"),
    ("configs/finetune/babyai_lora.yaml", "vlmr.finetune.train:FinetuneConfig", "optim.lr=.nan", "optim.lr"),
    ("configs/calibrate/babyai_goto.yaml", "vlmr.calibrate.fit:CalibrateConfig", "batch_size=0", "batch_size"),
    ("configs/data/shapes.yaml", "vlmr.rl.collect.collect:CollectConfig", "image_size=0", "image_size"),
    ("configs/rl/babyai_goto.yaml", "vlmr.rl.agent.ppo:PPOConfig", "image_size=-1", "image_size"),
    ("configs/rl/babyai_goto.yaml", "vlmr.rl.agent.ppo:PPOConfig", "learning_rate=0", "learning_rate"),
    ("configs/rl/compare_babyai.yaml", "vlmr.rl.experiments.compare:CompareConfig", "rl.learning_rate=-1e-3",
     "rl.learning_rate"),
    ("configs/pipeline/babyai_demo.yaml", "vlmr.rl.experiments.pipeline:PipelineConfig", "image_size=0", "image_size"),
    ("configs/pipeline/babyai_demo.yaml", "vlmr.rl.experiments.pipeline:PipelineConfig", "frame_size=-3", "frame_size"),
])
def test_sizes_and_learning_rates_out_of_range_name_their_key(config, cls_path, override, key):
    """lr <= 0 (a model that cannot change, or an optimizer traceback), batch and image sizes below 1."""
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    load_config(cls, config)  # the shipped config itself is fine
    with pytest.raises(VlmrError, match=rf"{config}:\n  key '{key}': Input should be (greater|a finite)"):
        load_config(cls, config, [override])


def test_evaluate_batch_size_and_scaling_sizes_out_of_range():
    from vlmr.calibrate.evaluate import EvaluateConfig
    from vlmr.rl.experiments.scaling import ScalingModel

    from vlmr.core.config import build_config

    with pytest.raises(VlmrError, match=r"batch_size \(--batch-size\) must be >= 1"):
        build_config(EvaluateConfig, {"models": [{"dir": "m"}], "data": "d", "batch_size": 0})
    with pytest.raises(VlmrError, match=r"key 'frame_size': Input should be greater than or equal to 1"):
        build_config(ScalingModel, {"arch": "vlmr-tiny", "image_size": 64, "frame_size": 0})


def test_reports_name_shipped_configs_without_the_install_path(tmp_path):
    from vlmr.core.config import config_label, resolve_config

    assert config_label(resolve_config("babyai_demo", "pipeline")) == "pipeline/babyai_demo"
    assert config_label(tmp_path / "mine.yaml") == str(tmp_path / "mine.yaml")


def test_the_demo_with_refinement_is_the_demo_plus_its_refine_section():
    """babyai_demo_refine.yaml repeats the demo's keys so that it runs in the same folder, skipping the demo's
    finished stages; a key changed in one file only would make it rerun the demo's chain from there."""
    import dataclasses

    from vlmr.rl.experiments.pipeline import PipelineConfig

    demo = dataclasses.asdict(load_config(PipelineConfig, "babyai_demo", kind="pipeline"))
    refine = dataclasses.asdict(load_config(PipelineConfig, "babyai_demo_refine", kind="pipeline"))
    assert demo.pop("refine") is None and refine.pop("refine")["config"].endswith("refine/babyai_refine.yaml")
    assert demo == refine
