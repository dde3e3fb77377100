"""CLI smoke tests: `vlmr models`, `vlmr score`, dispatch and error handling."""

import json
import subprocess
import sys

import numpy as np
import pytest
from model_fixtures import GOALS, tiny_reward_model  # noqa: F401
from PIL import Image

from vlmr.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "models" in out and "score" in out


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_models_json_lists_vlmr_architectures(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["vlmr-tiny"]["image_size"] == 64 and rows["vlmr-small"]["source"] == "vlmr"
    assert "openai" in rows["ViT-B-32"]["pretrained_tags"]


def test_score_images_with_a_saved_model(tiny_reward_model, tmp_path, capsys):
    tiny_reward_model.save(tmp_path / "rm")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(64, 64), (64, 64), (90, 70)]):
        p = tmp_path / f"f{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    assert main(["score", "--model", str(tmp_path / "rm"), "--json", *paths]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in data["results"]] == paths
    for r, path in zip(data["results"], paths):  # the CLI's numbers are the Python API's
        frame = np.asarray(Image.open(path).convert("RGB"))[None]
        expected = {g: float(tiny_reward_model.probs(frame, [g])[0]) for g in GOALS}
        assert r["probs"] == pytest.approx(expected, abs=1e-5)
    assert main(["score", "--model", str(tmp_path / "rm"), "--goal", GOALS[1], paths[0]]) == 0
    assert GOALS[1] in capsys.readouterr().out


def test_score_errors_are_one_line_messages(tmp_path, capsys):
    assert main(["score", "--arch", "vlmr-tiny", "--goal", "x", "--goal", "y", str(tmp_path / "missing.png")]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["score", "--arch", "vlmr-tiny", "--goal", "x", "--goal", "y", str(tmp_path / "bad.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "vlmr.cli", "models"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "vlmr-small" in out.stdout


def test_score_a_shard(babyai_dataset, capsys):
    shard = sorted(babyai_dataset.glob("test-*.tar"))[0]
    assert main(["score", "--arch", "vlmr-tiny", "--goal", "go to the red ball", "--negative", "an empty room", "--limit", "5", "--json",
                 str(shard)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert len(results) == 5 and all(r["input"].startswith(shard.name + ":") for r in results)
