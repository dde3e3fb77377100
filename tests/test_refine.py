"""`vlmr refine`: the config, the checks made before any work, and two rounds end to end on vlmr-tiny.

    .venv/bin/python -m pytest tests/test_refine.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from vlmr.rl.experiments.refine import RefineConfig, refine

from vlmr.core.config import load_config
from vlmr.core.errors import VlmrError


def write_config(tmp_path, refine_compare, data, **extra) -> str:
    cfg = {"compare_dir": str(refine_compare["compare_dir"]), "data": str(data), "out_dir": str(tmp_path / "refine"),
           "rollouts": {"episodes_per_agent": 12, "episodes_per_shard": 4, "num_envs": 4, "torch_threads": 1},
           "finetune": {"config": "configs/finetune/babyai_lora.yaml",
                        "set": {"trainer": {"max_steps": 2, "progress_bar": False, "limit_val_batches": 1},
                                "data": {"batch_size": 16, "shuffle_buffer": 32}, "optim": {"warmup_steps": 0},
                                "lora": {"r": 4, "alpha": 8}, "logger": "none"}},
           "calibrate": {"config": "configs/calibrate/babyai_goto.yaml",
                         "set": {"logger": "none", "plots": False, "device": "cpu"}}, **extra}
    path = tmp_path / "refine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_config_checks_mix_ratio_and_the_shipped_config_loads(tmp_path, refine_compare, babyai_dataset):
    path = write_config(tmp_path, refine_compare, babyai_dataset)
    assert load_config(RefineConfig, path).mix_ratio == 0.25
    for bad in ("1.5", "-0.1", ".nan"):
        with pytest.raises(VlmrError, match=f"key 'mix_ratio'.*got {bad.lstrip('.')}"):
            load_config(RefineConfig, path, [f"mix_ratio={bad}"])
    shipped = load_config(RefineConfig, "babyai_refine", kind="refine")
    assert shipped.arm == "adapted" and shipped.finetune.config.endswith("finetune/babyai_lora.yaml")


def test_inputs_are_checked_before_any_work(tmp_path, refine_compare, babyai_dataset, shapes_dataset):
    path = write_config(tmp_path, refine_compare, babyai_dataset)
    with pytest.raises(VlmrError, match=r"arm 'control' is not in compare run .*\['adapted'\]"):
        refine(load_config(RefineConfig, path, ["arm=control"]))
    old = tmp_path / "old"
    shutil.copytree(refine_compare["compare_dir"], old)
    for agent in old.glob("runs/adapted/seed-*/agent.pt"):
        agent.unlink()
    with pytest.raises(VlmrError, match=r"no recorded agents .*rerun `vlmr compare CONFIG --force`"):
        refine(load_config(RefineConfig, path, [f"compare_dir={old}"]))
    other = tmp_path / "other"
    shutil.copytree(refine_compare["reward_model"], other)
    (other / "adapter_model.safetensors").write_bytes(b"another adapter")
    with pytest.raises(VlmrError, match="is not the reward model the agents of arm 'adapted' trained on"):
        refine(load_config(RefineConfig, path, [f"parent={other}"]))
    with pytest.raises(VlmrError, match="unknown step 'round_2_rollouts'"):
        refine(load_config(RefineConfig, path), force={"round_2_rollouts"})
    with pytest.raises(VlmrError, match="goal sets differ"):  # the dataset is not the arm's model's
        refine(load_config(RefineConfig, path, [f"data={shapes_dataset}"]))
    assert not (tmp_path / "refine" / "round_1").exists()  # nothing was recorded or trained


def test_two_rounds_start_from_their_parents_and_recalibrate(tmp_path, refine_compare, babyai_dataset, capsys):
    from safetensors.torch import load_file
    from vlmr.finetune.reward_model import reward_model_id

    from vlmr.core.calibration_file import read_calibration
    from vlmr.core.dataset import read_manifest

    cfg = load_config(RefineConfig, write_config(tmp_path, refine_compare, babyai_dataset, rounds=2))
    refined = refine(cfg)
    out = tmp_path / "refine"
    assert refined == out / "round_2" / "finetune" / "reward_model"
    assert (out / "refined").resolve() == refined.resolve()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["refined"]["model_id"] == reward_model_id(refined)
    arm_model, first = refine_compare["reward_model"], out / "round_1" / "finetune" / "reward_model"
    for entry, parent in zip(summary["rounds"], (arm_model, first)):
        run_dir = Path(entry["reward_model"]).parent
        run = json.loads((run_dir / "run.json").read_text())
        assert run["parent_adapter"]["path"] == str(parent.resolve())  # a new run, from the parent's adapter
        assert entry["parent_id"] == reward_model_id(parent)
        # the rollouts of a round were rewarded by its parent; the calibration is the refined model's own
        assert read_manifest(entry["rollouts"])["parent"]["reward_model_id"] == reward_model_id(parent)
        cal = read_calibration(Path(entry["calibration"]), model_id=reward_model_id(entry["reward_model"]))
        fitted = {d["source"]: d["frames"] for d in cal["fit"]["datasets"]}  # the rollouts' val frames joined the fit
        assert fitted["rollouts"] == read_manifest(entry["rollouts"])["splits"]["val"]["samples"] > 0
    # the first round's weights are the arm's adapter moved by two small steps, not a fresh adapter
    before, after = load_file(arm_model / "adapter_model.safetensors"), load_file(first / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    moved = sum(float((after[k] - before[k]).pow(2).sum()) for k in before if "lora_B" in k)
    assert 0 < moved < 0.05 * sum(float(before[k].pow(2).sum()) for k in before if "lora_B" in k)

    capsys.readouterr()
    assert refine(cfg) == refined
    assert capsys.readouterr().out.count("up to date, skipped") == 6
