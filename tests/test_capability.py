"""Accuracy vs capability: agent success against reward quality (compare with 3+ reward arms, the scaling study),
and the scaling report made from finished runs' per-seed values."""

import json

import pytest
from vlmr.rl.experiments import capability
from vlmr.rl.experiments.capability import (
    capability_summary,
    compare_capability,
    plot_capability,
    scaling_points,
)
from vlmr.rl.experiments.scaling_report import agents_of, budget_table, plot_curves, write_outputs

from vlmr.core.errors import VlmrError


def rec(values):
    """A per-seed record as results.json holds it (the statistic is recomputed by the code under test)."""
    return {"mean": sum(values) / len(values), "lo": None, "hi": None, "values": values}


def compare_results(version=1, zs=(0.4, 0.5, 0.3), ad=(0.9, 0.8, 0.9), gt=(1.0, 0.9, 1.0)):
    """A compare results.json of a chain; version 1 is what the existing runs hold (bootstrap-era, same values)."""
    def arm(name, finals, precision):
        return {"name": name, "seeds": [0, 1, 2], "final_success": rec(list(finals)),
                "auc": rec([v / 2 for v in finals]), "reward_precision": {"values": list(precision)}}

    return {"version": version, "config": {"ci": 0.95, "contrasts": [["adapted", "zero_shot"]]},
            "arms": [arm("ground_truth", gt, [None] * 3), arm("zero_shot", zs, [0.1, 0.2, 0.15]),
                     arm("adapted", ad, [0.9, 0.95, None])]}


def test_agents_of_recomputes_intervals_and_pairs_contrasts_from_per_seed_values():
    arms, comparisons, interval = agents_of(compare_results())
    assert interval == {"method": "t", "name": "t-interval", "ci": 0.95}
    # adapted - zero_shot per seed: 0.5, 0.3, 0.6 -> mean 0.4667, sd 0.152753, sem 0.0881917, t(0.975, 2) = 4.3027
    d = comparisons["adapted_minus_zero_shot/final_success"]
    assert d["paired"] and d["mean"] == pytest.approx(0.466667, abs=1e-6)
    assert d["hi"] - d["mean"] == pytest.approx(4.3027 * 0.0881917, rel=1e-4)
    assert arms["adapted"]["final_success"]["lo"] is not None  # the stored None interval is not what is reported
    assert arms["adapted"]["rollout_precision"]["n"] == 2  # an undefined seed is skipped
    assert arms["ground_truth"]["rollout_precision"]["n"] == 0
    with pytest.raises(VlmrError, match="version 9"):
        agents_of(compare_results(version=9))


def rows():
    """Two model sizes of a scaling study, with the undefined values real runs have."""
    out = []
    for arch, params, auroc, results in (("small", 4e6, (0.6, 0.99), compare_results()),
                                         ("big", 4e7, (None, 0.8), compare_results(zs=(0.5, 0.6, 0.5)))):
        arms, comparisons, interval = agents_of(results)
        for name, a in zip(("zero_shot", "adapted"), auroc):
            arms[name].update(auroc=a, precision=0.5)
        out.append({"arch": arch, "params": int(params), "image_size": 64, "frame_size": 64, "view": "own-goal",
                    "arms": arms, "comparisons": comparisons, "interval": interval})
    return out


def test_capability_points_skip_undefined_values():
    summary = capability_summary(scaling_points(rows()))
    points = summary["points"]
    # every reward arm at every size; ground truth has no reward quality at all
    assert [(p["arm"], p["arch"]) for p in points] == [("zero_shot", "small"), ("adapted", "small"),
                                                        ("zero_shot", "big"), ("adapted", "big")]
    assert summary["correlations"]["test_auroc"]["n"] == 3  # big zero-shot has no AUROC: left out of this one
    assert summary["correlations"]["rollout_precision"]["n"] == 4


def test_plot_helper_runs_on_a_small_results_dict_and_never_draws_undefined_as_zero(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(capability, "save_figure", lambda fig, path, dpi=100: figures.append(fig) or path)
    summary = capability_summary(scaling_points(rows()) + [
        {"arm": "control", "label": "control", "arch": "small", "params": None, "test_auroc": 0.9,
         "rollout_precision": None, "final_success": None}])
    plot_capability(summary, tmp_path / "capability.png", params_panel=True)
    (fig,) = figures
    auroc_ax, precision_ax, params_ax = fig.axes
    def drawn(ax):  # the points' x (the markers; error-bar caps are other lines)
        return sorted(round(x, 3) for line in ax.lines if line.get_marker() == "o" for x in line.get_xdata())

    assert drawn(auroc_ax) == [0.6, 0.8, 0.99]  # big zero-shot: no AUROC, control: no success; neither at 0
    assert drawn(precision_ax) == [0.15, 0.15, 0.925, 0.925]
    assert "Spearman rho" in auroc_ax.get_title()
    monkeypatch.undo()  # the real thing writes a PNG
    out = plot_capability(capability_summary(scaling_points(rows())), tmp_path / "real.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_scaling_outputs_from_finished_rows(tmp_path):
    report = write_outputs("study", "babyai_demo.yaml", rows(), tmp_path, {"name": "study"}).read_text()
    for name in ("results.json", "scaling.png", "capability.png"):
        assert (tmp_path / name).stat().st_size > 1000 or name == "results.json"
    results = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN
    assert results["capability"]["correlations"]["test_auroc"]["n"] == 3
    assert results["capability"]["correlations"]["rollout_precision"]["n"] == 4
    assert results["rows"][0]["arms"]["adapted"]["final_success"]["values"] == [0.9, 0.8, 0.9]
    assert "95% t-interval" in report and "paired by seed" in report and "Spearman rho" in report
    assert "Fewer than 5 seeds" in report  # 3 seeds per arm
    assert "ground_truth rollout precision" not in report  # a column with no defined value is left out
    assert "| small | 4.0M | 64 | 64 | 0.600 | 0.500 | 0.990 | 0.500 |" in report
    assert "| big | 40.0M | 64 | 64 | n/a |" in report


def test_compare_with_three_reward_arms_plots_success_against_reward_quality(tmp_path, rm_dir):
    from test_compare import RL
    from vlmr.rl.experiments.compare import CompareConfig, compare

    cfg = CompareConfig(out_dir=str(tmp_path / "cmp"), ground_truth=False, num_seeds=1, rl=RL,
                        reward_models={name: {"reward_model": rm_dir} for name in ("a", "b", "c")})
    summary = compare(cfg)
    out = tmp_path / "cmp"
    assert (out / "capability.png").read_bytes()[:4] == b"\x89PNG"
    points = summary["capability"]["points"]
    assert [p["arm"] for p in points] == ["a", "b", "c"] and {p["arch"] for p in points} == {"vlmr-tiny"}
    assert all(p["test_auroc"] is None for p in points)  # no calibration file: no test-split quality
    assert summary["capability"]["correlations"]["test_auroc"] == {"rho": None, "p": None, "n": 0}
    report = (out / "report.md").read_text()
    assert "## Agent success against reward quality" in report and "same parameter count" in report
    assert compare_capability(summary["arms"][:2]) is None  # two reward arms: no such section


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    import torch
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.envs.babyai_goals import family_goals

    torch.manual_seed(0)
    return str(RewardModel.create("vlmr-tiny", family_goals("goto")).save(tmp_path_factory.mktemp("rm") / "zs"))


def test_learning_curves_plot_and_budget_table_from_rows(tmp_path):
    curve = [{"step": 100, "value": 2.0}, {"step": 200, "value": 1.5}, {"step": 300, "value": None}]
    training = {"base": {"steps": 600, "best_step": 200, "stopped_early": True, "train_seconds": 61.0,
                         "monitor": "val/loss_contrastive", "curve": curve},
                "adapted": {"steps": 2000, "best_step": 2000, "stopped_early": False, "train_seconds": 90.0,
                            "monitor": "val/own_goal_auroc", "curve": []}}
    table_rows = [{"arch": "small", "training": training, "chain_seconds": 1800.0},
                  {"arch": "big", "training": {}, "chain_seconds": 5400.0}]
    assert plot_curves(table_rows, tmp_path / "curves.png").stat().st_size > 1000
    assert plot_curves([{"arch": "x", "training": {}}], tmp_path / "none.png") is None  # nothing recorded
    table = "\n".join(budget_table(table_rows))
    assert "| small | base | val/loss_contrastive | 600 | 200 | yes | 61 |" in table
    assert "| small | adapted | val/own_goal_auroc | 2000 | 2000 | no (hit max_steps) | 90 |" in table
    assert "2.00 h of stage wall time over 2 chains (small 30 min, big 90 min)" in table
