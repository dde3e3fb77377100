"""`vlmr pipeline` end to end on vlmr-tiny with minimal budgets: outputs, stage skipping, and reruns."""

import json

import pytest
import yaml
from vlmr.rl.experiments.pipeline import PipelineConfig, pipeline

from vlmr.core.config import load_config
from vlmr.core.errors import VlmrError


def write_config(tmp_path, adapt_steps: int) -> str:
    cfg = {
        "name": "smoke", "runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data"),
        "arch": "vlmr-tiny", "image_size": 64, "control": False,
        "goal_templates": {"goto": ["a {color} {type} right in front of you"]},
        "shapes": {"config": "data/shapes",
                   "set": {"frames": {"train": 128, "val": 32, "test": 32}, "shard_size": 64}},
        "domain": {"config": "configs/data/babyai_goto.yaml",
                   "set": {"frames": {"train": 192, "val": 96, "test": 96}, "shard_size": 96}},
        "base": {"config": "configs/finetune/base_shapes_full.yaml",
                 "set": {"trainer": {"max_steps": 2, "progress_bar": False, "val_every_n_epochs": 1},
                         "data": {"batch_size": 32}, "logger": "none"}},
        "adapt": {"config": "configs/finetune/babyai_lora.yaml",
                  "set": {"trainer": {"max_steps": adapt_steps, "progress_bar": False},
                          "data": {"batch_size": 32}, "logger": "none"}},
        "calibrate": {"config": "configs/calibrate/babyai_goto.yaml", "set": {"logger": "none", "plots": False}},
        "compare": {"config": "configs/rl/compare_babyai.yaml",
                    "set": {"num_seeds": 1, "bootstrap_samples": 200, "contrasts": [],  # the pipeline's default
                            "rl": {"total_timesteps": 256, "num_envs": 4, "num_steps": 32, "eval_every": 100,
                                   "eval_episodes": 2, "final_eval_episodes": 4, "logger": "none"}}},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def stage_records(tmp_path) -> dict:
    folder = tmp_path / "runs" / "smoke" / "pipeline"
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def test_pipeline_runs_skips_and_reruns_changed_stages(tmp_path, capsys):
    report = pipeline(load_config(PipelineConfig, write_config(tmp_path, adapt_steps=2)))
    text = report.read_text()
    assert "stand-in for web-scale CLIP" in text and "zero_shot" in text and "adapted" in text
    assert '- goto: "a {color} {type} right in front of you"' in text  # the report names the prompts used
    first = stage_records(tmp_path)
    assert set(first) == {"collect_shapes", "collect_domain", "base", "zero_shot", "adapted", "calibrate_zero_shot",
                          "calibrate_adapted", "evaluate", "compare"}
    results = json.loads((tmp_path / "runs" / "smoke" / "compare" / "results.json").read_text())
    assert {a["name"] for a in results["arms"]} == {"ground_truth", "zero_shot", "adapted"}
    # no contrasts configured: the pipeline compares what adaptation adds, as the demo report always has
    assert set(results["comparisons"]) == {"adapted_minus_zero_shot/final_success", "adapted_minus_zero_shot/auc"}
    assert "**adapted_minus_zero_shot/final_success**" in text
    assert "![success](compare/success_curves.png)" in text  # the agents' plots, linked from the chain's report
    # the chain's arms ran on the evaluated, calibrated models: test-split quality sits next to the agents' numbers
    adapted = next(a for a in results["arms"] if a["name"] == "adapted")
    assert adapted["test_quality"]["view"] == "own-goal" and adapted["test_quality"]["auroc"] is not None
    spec = json.loads((tmp_path / "runs/smoke/zero_shot/reward_model/reward_model.json").read_text())
    assert spec["goal_prompts"]["go to the red ball"] == ["a red ball right in front of you"]
    assert "| reward model | guaranteed goals |" in text and "| adapted | " in text  # guarantees on test
    # the rule that made them is stored too, so a goal added at load is prompted alike
    assert spec["version"] == 2 and spec["goal_templates"]["goto"]["prompts"] == ["a {color} {type} right in front of you"]

    capsys.readouterr()
    pipeline(load_config(PipelineConfig, write_config(tmp_path, adapt_steps=2)))
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == len(first)

    assert pipeline(load_config(PipelineConfig, write_config(tmp_path, adapt_steps=2)), stop_after="base") is None
    out = capsys.readouterr().out
    assert "stopped after stage base" in out and "[base] up to date" in out and "[zero_shot]" not in out

    # a changed adaptation config reruns adaptation and everything downstream of it, nothing upstream
    pipeline(load_config(PipelineConfig, write_config(tmp_path, adapt_steps=3)))
    out = capsys.readouterr().out
    for stage in ("collect_shapes", "collect_domain", "base", "zero_shot", "calibrate_zero_shot"):
        assert f"[{stage}] up to date, skipped" in out
    for stage in ("adapted", "calibrate_adapted", "evaluate", "compare"):
        assert f"[{stage}] running" in out
    assert "starting over" in out  # a changed stage never resumes the old config's checkpoint
    assert stage_records(tmp_path)["adapted"]["fingerprint"] != first["adapted"]["fingerprint"]


def test_scaling_runs_a_chain_per_model_and_plots(tmp_path):
    from vlmr.rl.experiments.scaling import ScalingConfig, scaling

    path = tmp_path / "scaling.yaml"
    path.write_text(yaml.safe_dump({"name": "study", "pipeline": write_config(tmp_path, adapt_steps=2),
                                    "runs_dir": str(tmp_path / "runs"),
                                    "models": [{"arch": "vlmr-tiny", "image_size": 64, "frame_size": 48}],
                                    "set": {"compare": None,
                                            "paraphrases": ["stand right in front of the {color} {type}"]}}))
    report = scaling(load_config(ScalingConfig, str(path)))
    results = json.loads((tmp_path / "runs/study/results.json").read_text())
    (row,) = results["rows"]
    import open_clip

    expected = sum(p.numel() for p in open_clip.create_model("vlmr-tiny").parameters())
    assert row["params"] == expected
    assert set(row["arms"]) == {"zero_shot", "adapted"}
    evaluated = json.loads((tmp_path / "runs/study_vlmr-tiny/evaluate/results.json").read_text())
    adapted = next(m for m in evaluated["models"] if m["name"] == "adapted")
    assert row["arms"]["adapted"]["auroc"] == adapted["metrics"]["macro"]["own_goal"]["auroc"]  # the chain's own
    assert (tmp_path / "runs/study/scaling.png").stat().st_size > 1000
    assert "vlmr-tiny" in report.read_text()
    assert (tmp_path / "runs/study_vlmr-tiny/pipeline/base.json").is_file()
    # frame_size: the domain is rendered off the model's input size (resized by the reward model), shapes are not
    data = {json.loads((d / "manifest.json").read_text())["name"]: json.loads((d / "manifest.json").read_text())
            for d in (tmp_path / "data").iterdir()}
    assert sorted(m["image_size"] for m in data.values()) == [48, 64]
    assert row["frame_size"] == 48 and "| vlmr-tiny | " in report.read_text() and "| 48 | 64 |" in report.read_text()
    # budgets and guarantees travel in the row; a size whose chain folder is gone keeps its row on --plot-only
    assert "AUROC by mission wording" in (tmp_path / "runs/study_vlmr-tiny/report.md").read_text()
    assert [w["wording"] for w in adapted["wordings"]] == ["original", "stand right in front of the {color} {type}"]
    assert row["training"]["adapted"]["steps"] == 2 and row["chain_seconds"] > 0
    guarantee = row["arms"]["adapted"]["guarantee"]
    assert 0 <= guarantee["guaranteed"] <= guarantee["fitted"] == len(adapted["metrics"]["per_goal"])
    import shutil

    shutil.rmtree(tmp_path / "runs/study_vlmr-tiny")
    again = scaling(load_config(ScalingConfig, str(path)), plot_only=True).read_text()
    (kept,) = json.loads((tmp_path / "runs/study/results.json").read_text())["rows"]
    assert kept["kept_from_previous_results"] and kept["arms"] == row["arms"]
    assert "come from an earlier results.json" in again


def test_unusable_base_pretrained_fails_before_any_stage(tmp_path):
    import pytest

    from vlmr.core.errors import VlmrError

    for bad, message in (("runs/none/base.safetensors", "not found"), ("no_such_tag", "unknown pretrained tag")):
        cfg = load_config(PipelineConfig, write_config(tmp_path, adapt_steps=2), [f"base_pretrained={bad}"])
        with pytest.raises(VlmrError, match=message):
            pipeline(cfg)
        assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_only_an_interrupted_attempt_with_the_same_config_resumes(tmp_path):
    import pytest
    from vlmr.rl.experiments.stage_runner import StageRunner

    runner = StageRunner(tmp_path, force=set())
    assert not runner.interrupted("adapted", {"steps": 2})  # never started

    def killed():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run("adapted", {"steps": 2}, lambda: True, killed)
    assert runner.interrupted("adapted", {"steps": 2})  # same config: resume its checkpoint
    assert not runner.interrupted("adapted", {"steps": 3})  # changed config: start over
    runner.run("adapted", {"steps": 2}, lambda: True, lambda: "done")
    assert not runner.interrupted("adapted", {"steps": 2})  # finished


def test_scaling_bad_configs_name_the_problem(tmp_path):
    import pytest
    from vlmr.rl.experiments.scaling import ScalingConfig, scaling

    from vlmr.core.errors import VlmrError

    tiny = {"arch": "vlmr-tiny", "image_size": 64}
    for models, pipeline_yaml, message in (([tiny, tiny], "configs/pipeline/babyai_demo.yaml", "twice"),
                                           ([tiny], "pipeline/nope.yaml", "nope")):
        path = tmp_path / "scaling.yaml"
        path.write_text(yaml.safe_dump({"name": "s", "pipeline": pipeline_yaml, "models": models,
                                        "runs_dir": str(tmp_path / "runs")}))
        with pytest.raises(VlmrError, match=message):
            scaling(load_config(ScalingConfig, str(path)))
    assert not (tmp_path / "runs").exists()
    path.write_text(yaml.safe_dump({"name": "s", "pipeline": "configs/pipeline/babyai_demo.yaml", "models": [tiny],
                                    "runs_dir": str(tmp_path / "runs")}))
    with pytest.raises(VlmrError, match=r"--only \['vlmr-huge'\]: not among the study's models"):
        scaling(load_config(ScalingConfig, str(path)), only=["vlmr-huge"])
    with pytest.raises(VlmrError, match="no size's chain is finished"):  # --plot-only before any chain ran
        scaling(load_config(ScalingConfig, str(path)), plot_only=True)


def test_unknown_stage_names_are_rejected_with_the_list_of_stages(tmp_path, capsys):
    from vlmr.cli import main

    path = write_config(tmp_path, adapt_steps=2)
    with pytest.raises(VlmrError, match=r"unknown stage 'calibrate'; the stages are collect_shapes, .*, compare, refine, "
                       "compare_refined$"):
        pipeline(load_config(PipelineConfig, path), force={"calibrate", "adapted"})
    with pytest.raises(VlmrError, match=r"unknown stage 'refine_2'.*compare_refined$"):  # one on-policy round
        pipeline(load_config(PipelineConfig, path), stop_after="refine_2")
    assert main(["pipeline", path, "--force", "adapted", "calibrate_adapted", "calbrate"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage 'calbrate'" in err and "calibrate_zero_shot, calibrate_adapted, calibrate_control" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()  # rejected before any stage


def test_pipeline_refines_the_adapted_model_and_adds_its_agents(tmp_path, capsys):
    """The refine stage replays the adapted arm's agents, fine-tunes from its adapter and recalibrates; the refined
    arm's agents join the same compare (the other arms' runs reused) with refined - adapted as a contrast."""
    path = write_config(tmp_path, adapt_steps=2)
    cfg = yaml.safe_load(open(path))
    # a recall-heavy threshold, so the barely trained reward fires on the agents' frames and the rollouts have some
    cfg["calibrate"]["set"].update({"criterion": "fbeta", "f_beta": 10.0, "min_positives": 2})
    # goals held out of fine-tuning: the models are prompted for the seen goals only and score the others as new
    cfg["domain"]["set"]["holdout_goals"] = "one_in_three_pairs"
    cfg["refine"] = {"config": "configs/refine/babyai_refine.yaml",
                     "set": {"rollouts": {"episodes_per_agent": 16, "episodes_per_shard": 4, "num_envs": 4},
                             "finetune": {"set": {"trainer": {"max_steps": 2}}}}}
    cfg["refine_rounds"] = 2  # a second on-policy round: the refined arm's agents, replayed with its reward
    path = tmp_path / "refine_pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    report = pipeline(load_config(PipelineConfig, str(path)))
    records = stage_records(tmp_path)
    assert {"refine", "compare_refined", "refine_2", "compare_refined_2"} <= set(records)
    run_dir = tmp_path / "runs" / "smoke"
    summary = json.loads((run_dir / "refine" / "summary.json").read_text())
    assert summary["rounds"][0]["parent"] == str(run_dir / "adapted" / "reward_model")
    second = json.loads((run_dir / "refine_2" / "summary.json").read_text())
    assert second["config"]["arm"] == "refined"  # the agents trained on round 1's reward, refining its model
    assert second["rounds"][0]["parent"] == str(run_dir / "refine" / "round_1" / "finetune" / "reward_model")
    run = json.loads((run_dir / "refine" / "round_1" / "finetune" / "run.json").read_text())
    assert run["parent_adapter"]["path"].endswith("adapted/reward_model")
    # the pipeline's adapt settings with the refine config's finetune.set on top
    assert run["config"]["trainer"]["max_steps"] == 2 and run["config"]["data"]["batch_size"] == 32
    results = json.loads((run_dir / "compare" / "results.json").read_text())
    assert [a["name"] for a in results["arms"]] == ["ground_truth", "zero_shot", "adapted", "refined", "refined_2"]
    assert {"refined_minus_adapted/final_success", "refined_2_minus_refined/final_success"} <= set(results["comparisons"])
    text = report.read_text()
    assert "## On-policy refinement" in text and "| refined |" in text and "| refined_2 | 1 |" in text
    spec = json.loads((run_dir / "adapted" / "reward_model" / "reward_model.json").read_text())
    held = json.loads((tmp_path / "data" / "smoke_domain" / "manifest.json").read_text())["holdout_goals"]
    assert len(held) == 6 and not set(held) & set(spec["goals"]) and not set(held) & set(spec["goal_prompts"])
    evaluated = json.loads((run_dir / "evaluate" / "results.json").read_text())
    assert {"seen", "held out"} <= set(evaluated["models"][1]["metrics"]["groups"]) and "| held out | 6 |" in text
    # the held-out goals' fit-split frames give the fit new goals get; each held-out goal is scored by the
    # fit on the other half of them
    fit = json.loads((run_dir / "adapted" / "reward_model" / "calibration.json").read_text())["fit"]
    halves = fit["new_goal"]["cross_fit"]
    assert sorted(halves[0]["goals"] + halves[1]["goals"]) == sorted(held) and halves[0]["fitted_on"] == halves[1]["goals"]
    adapted = evaluated["models"][1]
    cross = {g: h["threshold"] for h in halves for g in h["goals"]}
    assert adapted["thresholds"][len(spec["goals"]):] == pytest.approx([cross[g] for g in adapted["new_goals"]])

    capsys.readouterr()
    pipeline(load_config(PipelineConfig, str(path)))
    assert capsys.readouterr().out.count("up to date, skipped") == len(records)


def test_refine_without_a_compare_is_a_config_error(tmp_path):
    cfg = yaml.safe_load(open(write_config(tmp_path, adapt_steps=2)))
    cfg.update({"compare": None, "refine": {"config": "configs/refine/babyai_refine.yaml"}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(VlmrError, match="refine replays the compare's agents"):
        load_config(PipelineConfig, str(path))


@pytest.mark.parametrize(("view", "frame_size", "rl"), [
    ("egocentric", None, {}),
    ("egocentric", 96, {"image_size": 96}),
    ("egocentric_carry", None, {"env_kwargs": {"view": "egocentric_carry"}}),
    ("topdown", 96, {"image_size": 96, "env_kwargs": {"view": "topdown"}}),
])
def test_agents_reward_sees_frames_drawn_as_the_domain_data(tmp_path, view, frame_size, rl):
    from vlmr.rl.experiments.pipeline_stages import frames_like_domain

    (tmp_path / "manifest.json").write_text(json.dumps({"view": view}))
    assert frames_like_domain(frame_size, tmp_path) == rl
