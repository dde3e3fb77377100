"""`vlmr compare`: runs every (arm, seed), resumes, shards and aggregates; report, results and plots."""

import json
import math
import os

import pytest
import torch
import yaml
from vlmr.finetune.reward_model import RewardModel
from vlmr.rl.envs.babyai_goals import family_goals
from vlmr.rl.experiments.compare import CompareConfig, compare
from vlmr.rl.experiments.compare_summary import contrasts

from vlmr.core.config import load_config
from vlmr.core.errors import VlmrError

RL = dict(env_id="BabyAI-GoToObj-v0", total_timesteps=256, num_envs=4, num_steps=64, eval_episodes=4,
          final_eval_episodes=4, actions=["left", "right", "forward"], progress=False, logger="none", image_size=64)


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(RewardModel.create("vlmr-tiny", family_goals("goto")).save(tmp_path_factory.mktemp("rm") / "zs"))


def config(tmp_path, rm_dir, **rl):
    return CompareConfig(out_dir=str(tmp_path / "cmp"), num_seeds=2, reward_models={"zero_shot": {"reward_model": rm_dir}},
                         contrasts=[("zero_shot", "ground_truth")], rl={**RL, **rl})


def mtimes(root):
    return {p: os.stat(p).st_mtime_ns for p in sorted(root.glob("runs/*/seed-*/result.json"))}


def test_compare_runs_resumes_and_reports(tmp_path, rm_dir, capsys):
    cfg = config(tmp_path, rm_dir)
    summary = compare(cfg)
    out = tmp_path / "cmp"
    assert [a["name"] for a in summary["arms"]] == ["ground_truth", "zero_shot"]
    for name in ("results.json", "report.md", "success_curves.png", "reward_precision.png"):
        assert (out / name).is_file(), name
    assert (out / "success_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    zs = results["arms"][1]
    assert zs["seeds"] == [0, 1] and len(zs["final_success"]["values"]) == 2
    assert zs["final_success"]["lo"] <= zs["final_success"]["mean"] <= zs["final_success"]["hi"]
    assert "precision_curve" in zs and "precision_curve" not in results["arms"][0]
    report = (out / "report.md").read_text()
    assert "| ground_truth |" in report and "| zero_shot |" in report and "stand-in" in report
    # the configured contrast, and only it, is reported: zero_shot - ground_truth, from the per-seed values
    assert set(results["comparisons"]) == {"zero_shot_minus_ground_truth/final_success",
                                           "zero_shot_minus_ground_truth/auc"}
    diff = results["comparisons"]["zero_shot_minus_ground_truth/final_success"]
    assert diff["mean"] == pytest.approx(zs["final_success"]["mean"] - results["arms"][0]["final_success"]["mean"])
    assert "**zero_shot_minus_ground_truth/final_success**" in report
    # the arms ran the same seeds: the difference is paired by seed, and the report says so (and that 2 seeds is few)
    assert diff["paired"] and diff["seeds"] == [0, 1] and "paired by seed" in report
    assert "95% t-interval over seeds" in report and "Fewer than 5 seeds** (ground_truth: 2, zero_shot: 2)" in report
    assert results["interval"] == {"method": "t", "name": "t-interval", "ci": 0.95}
    # per-seed values of every metric round-trip through results.json, in seed order
    for a in results["arms"]:
        runs = [json.loads((out / f"runs/{a['name']}/seed-{s}/result.json").read_text()) for s in a["seeds"]]
        quality = [r["reward_quality"] or {} for r in runs]
        assert a["final_success"]["values"] == [r["final_success_rate"] for r in runs]
        assert a["sps"]["values"] == pytest.approx([r["sps"] for r in runs])
        assert a["reward_precision"]["values"] == [q.get("precision") for q in quality]
        assert a["reward_recall"]["values"] == [q.get("recall") for q in quality]
        assert len(a["auc"]["values"]) == 2 and a["auc"]["n"] == 2
    assert results["arms"][0]["reward_precision"]["values"] == [None, None]  # ground truth: undefined, not 0
    assert results["capability"] is None and not (out / "capability.png").exists()  # one reward arm: no such plot
    # every arm used the same goal embeddings: the zero-shot model's (the first arm with a model)
    gt_result = json.loads((out / "runs/ground_truth/seed-0/result.json").read_text())
    assert gt_result["goal_source"] == zs_result_source(out)

    # resume: nothing reruns
    before = mtimes(out)
    assert len(before) == 4
    capsys.readouterr()
    compare(cfg)
    assert mtimes(out) == before
    assert capsys.readouterr().out.count("done, skipped") == 4

    # every run keeps its agent; --force reruns a finished run
    assert sorted(p.parent.name for p in out.glob("runs/*/seed-*/agent.pt")) == ["seed-0", "seed-0", "seed-1", "seed-1"]
    compare(cfg, arm=["zero_shot"], seed=[0], force=True)
    assert "zero_shot seed 0: running (--force)" in capsys.readouterr().out
    before = mtimes(out)

    # a changed setting makes the results stale: they rerun
    compare(config(tmp_path, rm_dir, ent_coef=0.02), arm=["ground_truth"], seed=[1])
    after = mtimes(out)
    changed = [p for p in after if after[p] != before[p]]
    assert [p.parent.parent.name + "/" + p.parent.name for p in changed] == ["ground_truth/seed-1"]


def zs_result_source(out):
    return json.loads((out / "runs/zero_shot/seed-0/result.json").read_text())["goal_source"]


def test_shards_then_aggregate(tmp_path, rm_dir, capsys):
    cfg = config(tmp_path, rm_dir)
    assert compare(cfg, arm=["zero_shot"], seed=[1]) is None  # a shard writes no report
    out = tmp_path / "cmp"
    assert [p.parent.parent.name for p in mtimes(out)] == ["zero_shot"]
    assert not (out / "report.md").exists()
    summary = compare(cfg, aggregate_only=True)
    assert [a["name"] for a in summary["arms"]] == ["zero_shot"]
    assert {(m["arm"], m["seed"]) for m in summary["missing"]} == {("ground_truth", 0), ("ground_truth", 1),
                                                                    ("zero_shot", 0)}
    assert "Missing or stale runs" in (out / "report.md").read_text()
    with pytest.raises(VlmrError, match="not in the config's arms"):
        compare(cfg, arm=["adapted"])


def test_workers_train_the_same_runs_in_processes(tmp_path, rm_dir, capsys):
    import dataclasses

    compare(config(tmp_path / "one", rm_dir), arm=["zero_shot"])
    pooled = dataclasses.replace(config(tmp_path / "two", rm_dir), workers=2)
    compare(pooled, arm=["zero_shot"])
    for seed in (0, 1):
        one, two = (json.loads((tmp_path / f"{d}/cmp/runs/zero_shot/seed-{seed}/result.json").read_text())
                    for d in ("one", "two"))
        assert two["config"]["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)  # ran in the process pool
        assert one["config"]["torch_threads"] is None
        # the same run: resume and aggregate treat both alike (its numbers may differ in float rounding with the
        # thread count, which a long run can amplify)
        assert two["inputs"] == one["inputs"] and two["fingerprint"] == one["fingerprint"]
        assert two["seed"] == seed and 0 <= two["final_success_rate"] <= 1
    capsys.readouterr()
    compare(pooled, arm=["zero_shot"])  # resume: both finished runs are skipped, none is queued
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 2 and "queued" not in out


def test_aggregate_without_runs_and_bad_configs(tmp_path, rm_dir):
    with pytest.raises(VlmrError, match="no finished runs"):
        compare(config(tmp_path, rm_dir), aggregate_only=True)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rl": {"reward_model": rm_dir}}))
    with pytest.raises(VlmrError, match="set per arm"):
        load_config(CompareConfig, path)
    path.write_text(yaml.safe_dump({"workers": 0}))
    with pytest.raises(VlmrError, match="workers=0"):
        load_config(CompareConfig, path)
    path.write_text(yaml.safe_dump({"ground_truth": False}))
    with pytest.raises(VlmrError, match="no arms"):
        load_config(CompareConfig, path)
    cfg = CompareConfig(out_dir=str(tmp_path / "x"), reward_models={"adapted": {"reward_model": str(tmp_path / "nope")}},
                        rl=RL)
    with pytest.raises(VlmrError, match="not found"):
        compare(cfg)


def test_cli_shard_and_aggregate(tmp_path, rm_dir):
    from vlmr.cli import main

    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "cmp"), "num_seeds": 1, "rl": {**RL, "goal_encoding":
                                                                                             "onehot"}}))
    assert main(["compare", str(path), "--arm", "ground_truth", "--seed", "0"]) == 0
    assert main(["compare", str(path), "--aggregate"]) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert results["arms"][0]["name"] == "ground_truth" and results["missing"] == []


def test_contrasts_name_arms_of_the_config(tmp_path, rm_dir):
    models = {"zero_shot": {"reward_model": rm_dir}, "adapted": {"reward_model": rm_dir}}
    for pairs, message in (([["adapted", "zero_shoot"]], "zero_shoot"), ([["adapted", "adapted"]], "with itself"),
                           ([["adapted"]], "contrasts")):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"reward_models": models, "contrasts": pairs}))
        with pytest.raises(VlmrError, match=message) as err:
            load_config(CompareConfig, path)
        assert "contrasts" in str(err.value)
    with pytest.raises(VlmrError, match=r"contrasts name \['control'\], which are not arms") as err:
        load_config(CompareConfig, path, ["contrasts=[[adapted, control]]"])
    assert all(repr(arm) in str(err.value) for arm in ("ground_truth", "zero_shot", "adapted"))  # the arms there are
    # the shipped configs state the difference the reports have always shown
    for name in ("rl/compare_babyai", "rl/compare_crafter"):
        assert load_config(CompareConfig, name).contrasts == [("adapted", "zero_shot")]


def test_contrasts_compare_any_named_pair_and_skip_arms_without_runs():
    def arm(name, finals):
        return {"name": name, "seeds": list(range(len(finals))), "final_success": {"values": finals},
                "auc": {"values": [v / 2 for v in finals]}}

    arms = [arm("a", [1.0, 1.0]), arm("b", [0.0, 1.0]), arm("c", [0.5])]
    out = contrasts([("a", "b"), ("c", "a"), ("a", "missing")], arms, 0.95, "t")
    assert list(out) == ["a_minus_b/final_success", "a_minus_b/auc", "c_minus_a/final_success", "c_minus_a/auc"]
    # seeds 0 and 1 shared: per-seed differences (1, 0), mean 0.5, sem 0.5, t(0.975, 1 df) = 12.7062
    d = out["a_minus_b/final_success"]
    assert d["paired"] and (d["mean"], d["lo"], d["hi"]) == pytest.approx((0.5, 0.5 - 6.3531, 0.5 + 6.3531), abs=1e-3)
    assert out["a_minus_b/auc"]["mean"] == 0.25
    # c ran one seed: one shared seed is no pairing; one value is no interval
    c = out["c_minus_a/final_success"]
    assert c["mean"] == -0.5 and not c["paired"] and math.isnan(c["lo"])
    assert contrasts([], arms, 0.95) == {}  # no pair named: nothing compared, whatever the arms are called
