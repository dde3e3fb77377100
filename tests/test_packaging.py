"""The package as a user installs it: one `vlmr` namespace, shipped configs, lazy imports, extras, layering.

    .venv/bin/python -m pytest tests/test_packaging.py -q
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmr.cli import main as cli_main
from vlmr.core.config import load_config, resolve_config, shipped_configs
from vlmr.core.errors import VlmrError

REPO = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = {"vlmr": "vlmr", "finetune": "vlmr.finetune", "calibrate": "vlmr.calibrate", "rl": "vlmr.rl"}


def run_python(code: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- layering


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    dotted = ".".join(rel.with_suffix("").parts)
    top, _, rest = dotted.partition(".")
    name = SOURCE_FOLDERS[top] + (f".{rest}" if rest else "")
    return name.removesuffix(".__init__")


def layer(module: str) -> int | None:
    """core 0 <- finetune 1 <- calibrate 2 <- rl 3 <- the CLI, benchmarks and public API 4."""
    for prefix, rank in (("vlmr.core", 0), ("vlmr.configs", 0), ("vlmr.finetune", 1), ("vlmr.calibrate", 2),
                         ("vlmr.rl", 3)):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return 4 if module == "vlmr" or module.startswith("vlmr.") else None


def vlmr_imports(path: Path) -> list[str]:
    """Every vlmr module a file imports, at the top or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "vlmr" or n.startswith("vlmr.")]


def test_dependencies_point_one_way():
    files = [p for top in SOURCE_FOLDERS for p in (REPO / top).rglob("*.py")]
    assert len(files) > 40
    wrong = []
    for path in files:
        me = module_name(path)
        for imported in vlmr_imports(path):
            if layer(imported) > layer(me):
                wrong.append(f"{path.relative_to(REPO)} ({me}) imports {imported}")
    assert not wrong, "imports against core <- finetune <- calibrate <- rl <- CLI:\n" + "\n".join(wrong)


def test_layering_check_catches_an_upward_import():
    assert layer("vlmr.rl.agent.ppo") > layer("vlmr.finetune.reward_model") > layer("vlmr.core.files")
    assert layer("vlmr.cli") == 4 and layer("torch") is None


def test_every_source_package_is_in_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(p) for top in SOURCE_FOLDERS for p in (REPO / top).rglob("__init__.py")}
    config_folders = {f"vlmr.configs.{d.name}" for d in (REPO / "configs").iterdir()
                      if d.is_dir() and d.name != "__pycache__"}
    assert on_disk | {"vlmr.configs"} | config_folders == listed


# ---------------------------------------------------------------- public API and the CLI's start-up


def test_cli_help_and_configs_do_not_import_torch():
    r = run_python("import sys, vlmr, vlmr.cli\n"
                   "assert vlmr.cli.main(['--help']) == 0 and vlmr.cli.main(['configs']) == 0\n"
                   "print('torch' in sys.modules, 'open_clip' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False False"


def test_public_api_exports_resolve():
    import vlmr

    for name in vlmr.__all__:
        assert getattr(vlmr, name) is not None, name
    assert vlmr.RewardModel.__module__ == "vlmr.finetune.reward_model"
    assert callable(vlmr.run_pipeline) and callable(vlmr.train_ppo)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vlmr.nope  # noqa: B018


@pytest.mark.parametrize(("command", "module", "extra"), [
    (["finetune", "--help"], "pytorch_lightning", "train"),
    (["rl", "babyai_goto"], "minigrid", "envs"),
])
def test_a_missing_extra_is_named(command, module, extra, tmp_path):
    r = run_python(f"import sys; sys.modules[{module!r}] = None\n"
                   f"from vlmr.cli import main; sys.exit(main({command!r}))", cwd=tmp_path)  # it may write runs/
    assert r.returncode == 2, r.stderr
    assert f"pip install 'vlmr[{extra}]'" in r.stderr and module in r.stderr


def test_rewards_need_only_the_base_install():
    blocked = ["pytorch_lightning", "lightning", "torchmetrics", "webdataset", "wandb", "matplotlib", "minigrid",
               "crafter"]
    r = run_python(f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n"
                   "import numpy as np\nfrom vlmr import RewardModel, VLMReward\n"
                   "rm = RewardModel.create('vlmr-tiny', ['a red ball', 'a blue key'])\n"
                   "print(rm.probs(np.zeros((2, 64, 64, 3), np.uint8), [0, 1]).shape)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("torch.Size([2])")


# ---------------------------------------------------------------- shipped configs


def test_shipped_configs_are_found_by_name_and_refs_resolve_next_to_the_file():
    from vlmr.rl.experiments.pipeline import PipelineConfig

    names = shipped_configs()
    assert {"pipeline/babyai_demo", "data/shapes", "finetune/babyai_lora", "rl/compare_babyai"} <= set(names)
    cfg = load_config(PipelineConfig, "babyai_demo", kind="pipeline")
    assert Path(cfg.shapes.config) == names["data/shapes"].resolve()
    assert Path(cfg.compare.config) == names["rl/compare_babyai"].resolve()
    assert resolve_config("configs/data/shapes.yaml") is not None  # a checkout's path works from anywhere


def test_config_names_that_do_not_resolve_say_what_exists():
    with pytest.raises(VlmrError, match="data/babyai_goto, rl/babyai_goto|calibrate/babyai_goto"):
        resolve_config("babyai_goto")  # three stages ship one: ambiguous without a kind
    assert resolve_config("babyai_goto", kind="rl") == shipped_configs()["rl/babyai_goto"]
    with pytest.raises(VlmrError, match="vlmr configs"):
        resolve_config("no_such_config")


def test_configs_command_lists_shows_and_copies(tmp_path, capsys, monkeypatch):
    assert cli_main(["configs"]) == 0
    assert "pipeline/babyai_demo" in capsys.readouterr().out
    assert cli_main(["configs", "show", "babyai_demo"]) == 0
    assert capsys.readouterr().out == shipped_configs()["pipeline/babyai_demo"].read_text()
    monkeypatch.chdir(tmp_path)
    assert cli_main(["configs", "copy", "data/shapes"]) == 0
    assert (tmp_path / "shapes.yaml").read_text() == shipped_configs()["data/shapes"].read_text()
    assert cli_main(["configs", "copy", "data/shapes"]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_a_copied_pipeline_still_finds_the_shipped_stage_configs(tmp_path, monkeypatch):
    from vlmr.rl.collect.collect import CollectConfig
    from vlmr.rl.experiments.pipeline import PipelineConfig
    from vlmr.rl.experiments.stage_runner import stage_config

    monkeypatch.chdir(tmp_path)
    assert cli_main(["configs", "copy", "babyai_demo"]) == 0
    cfg = load_config(PipelineConfig, "babyai_demo.yaml")
    assert cfg.domain.config == "../data/babyai_goto.yaml"  # nothing next to the copy: the shipped one is meant
    assert stage_config(CollectConfig, cfg.domain, {}, "collect_domain").source == "babyai"


def test_provenance_names_the_source_and_the_working_directory():
    from vlmr.core.provenance import run_info

    info = run_info({"a": 1}, seed=3)
    if (REPO / ".git").exists():  # running from a checkout: its commit, 40 hex digits
        assert len(info["git"]["commit"]) == 40 and int(info["git"]["commit"], 16) >= 0
    assert set(info["workdir_git"]) == {"commit", "dirty"} and info["versions"]["vlmr"] != "not installed"


# ---------------------------------------------------------------- the wheel


def copy_source(dest: Path) -> Path:
    """The tree a wheel is built from, without build/ (a stale build/lib would leak old packages), venvs or runs."""
    top_level = {".git", ".venv", "build", "runs", "data", "wandb", ".pytest_cache", ".ruff_cache", "bench_out"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(folder) == REPO else set())

    return Path(shutil.copytree(REPO, dest, ignore=ignore))


def test_non_editable_install_has_one_top_level_package_and_runs_from_anywhere(tmp_path):
    src = copy_source(tmp_path / "src")
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-compile", "--target", str(target), str(src)], capture_output=True, text=True,
                         timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    top = sorted(p.name for p in target.iterdir())
    assert [n for n in top if not n.endswith(".dist-info") and n != "bin"] == ["vlmr"], top
    assert (target / "vlmr" / "configs" / "models" / "vlmr-tiny.json").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "offline"}
    where = run_python("import vlmr.finetune, vlmr.core.config as c; print(vlmr.finetune.__file__); "
                       "print(c.shipped_config_dir())", cwd=empty, env=env)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(target)) for line in where.stdout.split()), where.stdout

    def vlmr_cli(*args):
        return subprocess.run([sys.executable, "-m", "vlmr", *args], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=300)

    models = vlmr_cli("models")
    assert models.returncode == 0 and "vlmr-tiny" in models.stdout, models.stderr
    collected = vlmr_cli("collect", "--source", "shapes", "frames.train=8", "frames.val=4", "frames.test=4",
                         "shard_size=8", "--quiet")
    assert collected.returncode == 0, collected.stderr
    assert (empty / "data" / "shapes" / "manifest.json").is_file()
    assert sorted(p.name for p in empty.iterdir()) == ["data"]  # outputs resolve against the working directory
