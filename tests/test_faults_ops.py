"""Operational faults: a read-only or full disk, file modes, and what a resumed finetune may change.

Each fault ends as a one-line error (rc 2, naming the path or the keys) or a correct result, never a
traceback or a silently wrong number. We may run as root, where chmod stops nothing, so a read-only
folder and a full disk are simulated by raising the OSError the OS would raise (EROFS, ENOSPC).

    .venv/bin/python -m pytest tests/test_faults_ops.py -q
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from vlmr.finetune.reward_model import RewardModel
from vlmr.finetune.train import FinetuneConfig, finetune

from vlmr.cli import main as vlmr
from vlmr.core.config import build_config
from vlmr.core.errors import VlmrError
from vlmr.core.files import WriteError, atomic_dir, atomic_write_json, check_writable

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------------------------------------ simulated disks
@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): creating files or folders under `folder` fails with EROFS, as on a read-only mount."""
    roots: list[str] = []
    real_open, real_mkdir = os.open, os.mkdir

    def blocked(path) -> bool:
        p = os.path.abspath(os.fsdecode(path))
        return any(p == r or p.startswith(r + os.sep) for r in roots)

    def fake_open(path, flags, *args, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and blocked(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kw)

    def fake_mkdir(path, *args, **kw):
        if blocked(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_mkdir(path, *args, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return lambda folder: roots.append(os.path.abspath(folder)) or Path(folder)


@pytest.fixture
def full_disk(monkeypatch):
    """full_disk(pattern): fsync of a file whose name contains `pattern` fails with ENOSPC (after its bytes
    were written, as a full disk surfaces on flush), like a disk that fills up mid-run."""
    real = os.fsync
    patterns: list[str] = []

    def fake_fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if any(p in name for p in patterns):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see which file is written")
    monkeypatch.setattr(os, "fsync", fake_fsync)
    return patterns.append


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    line = err[-1]
    assert line.startswith("vlmr ") and ": error: " in line, err
    for n in needles:
        assert str(n) in line, (n, line)
    return line


def leftovers(root: Path) -> list[str]:
    """Temporary files and folders a failed write would leave behind."""
    return sorted(str(p) for p in Path(root).rglob("*") if p.name.endswith((".tmp", ".old")) or "probe" in p.name)


# ------------------------------------------------------------------------------------------------ files.py
def test_check_writable_creates_the_folder_and_names_it_when_it_cannot(tmp_path, read_only):
    assert check_writable(tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    ro = read_only(tmp_path / "ro")
    with pytest.raises(VlmrError, match=re.escape(f"cannot write run folder {ro / 'x'}: Read-only file system")):
        check_writable(ro / "x", "run folder")


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path, full_disk):
    path = atomic_write_json(tmp_path / "a.json", {"v": 1})
    full_disk("a.json")
    with pytest.raises(WriteError, match=re.escape(f"cannot write {path}: No space left on device")) as err:
        atomic_write_json(path, {"v": 2})
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC  # `except OSError` still works
    assert json.loads(path.read_text()) == {"v": 1} and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_turns_write_errors_into_one_line_and_keeps_the_old_dir(tmp_path):
    target = tmp_path / "rm"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left"), atomic_dir(target) as d:
        raise OSError(errno.ENOSPC, "No space left on device", str(d / "weights"))
    # safetensors says "os error 28" in its own exception type
    with pytest.raises(WriteError, match="No space left"), atomic_dir(target):
        raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(FileNotFoundError), atomic_dir(target):  # reading a missing input is not a write error
        open(tmp_path / "missing-input")
    assert (target / "v").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["rm"]


def test_files_and_folders_follow_the_umask(tmp_path):
    from safetensors.torch import save_file

    old = os.umask(0o027)
    try:
        with atomic_dir(tmp_path / "rm") as d:
            save_file({"w": torch.zeros(2)}, str(d / "w.safetensors"))  # safetensors creates 0600
            (d / "sub").mkdir()
        f = atomic_write_json(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "rm").st_mode & 0o777) == oct(0o750)
    assert oct(os.stat(tmp_path / "rm" / "sub").st_mode & 0o777) == oct(0o750)
    assert oct(os.stat(tmp_path / "rm" / "w.safetensors").st_mode & 0o777) == oct(0o640)
    assert oct(os.stat(f).st_mode & 0o777) == oct(0o640)


# ------------------------------------------------------------------------------------------------ stages: read-only
def ft_config(out_dir, data_dir, **extra) -> dict:
    cfg = {"name": "run", "output_dir": str(out_dir), "data": {"dir": str(data_dir), "batch_size": 32, "shuffle_buffer": 64},
           "model": {"arch": "vlmr-tiny"}, "lora": {"r": 4, "alpha": 8}, "optim": {"lr": 3e-3, "warmup_steps": 2},
           "trainer": {"max_steps": 3, "checkpoint_every_n_steps": 3, "progress_bar": False, "limit_val_batches": 1},
           "logger": "none"}
    for k, v in extra.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def small_rm(babyai_dataset, tmp_path_factory):
    from vlmr.core.dataset import read_manifest

    torch.manual_seed(0)
    rm = RewardModel.create("vlmr-tiny", read_manifest(babyai_dataset)["goals"], negatives=["a grey wall"])
    return rm.save(tmp_path_factory.mktemp("rm") / "reward_model")


def test_every_stage_refuses_a_read_only_output_folder_before_its_work(
        shapes_dataset, babyai_dataset, small_rm, tmp_path, read_only, monkeypatch, capsys):
    from vlmr.calibrate import evaluate, fit
    from vlmr.rl.agent import ppo
    from vlmr.rl.collect import collect
    from vlmr.rl.experiments import compare

    work = []  # the first piece of real work of each stage: none may run
    for module, name in ((fit, "score_split"), (evaluate, "score_split"), (collect, "_write_shard"),
                         (ppo, "make_vector_env"), (compare, "run_all")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: work.append(_n))
    ro = read_only(tmp_path / "ro")
    rm = str(small_rm)
    cases = {
        "collect": ["collect", "--source", "shapes", f"out_dir={ro / 'data'}", "frames.train=8", "--quiet"],
        "finetune": ["finetune", write_yaml(tmp_path / "ft.yaml", ft_config(ro / "runs", shapes_dataset))],
        "calibrate": ["calibrate", "babyai_goto", f"reward_model={rm}", f"data={babyai_dataset}",
                      f"out={ro / 'cal.json'}", "logger=none"],
        "evaluate": ["evaluate", "--model", rm, "--data", str(babyai_dataset), "--out", str(ro / "eval.json")],
        "rl": ["rl", "babyai_goto", f"out_dir={ro / 'rl'}"],
        "compare": ["compare", "compare_babyai", f"out_dir={ro / 'cmp'}"],
        "pipeline": ["pipeline", "babyai_demo", f"runs_dir={ro / 'runs'}"],
    }
    for stage, argv in cases.items():
        assert vlmr(argv) == 2, stage
        one_line_error(capsys, f"vlmr {stage}: error: cannot write", str(ro), "Read-only file system")
    assert work == []
    assert not (tmp_path / "ro").exists()


# ------------------------------------------------------------------------------------------------ stages: full disk
def test_collect_on_a_full_disk_names_the_shard_and_leaves_no_partial_shard(tmp_path, full_disk, capsys):
    out = tmp_path / "data"
    full_disk(".train-000000.tar.tmp")
    assert vlmr(["collect", "--source", "shapes", f"out_dir={out}", "frames.train=16", "frames.val=8",
                 "frames.test=8", "--quiet"]) == 2
    one_line_error(capsys, f"cannot write shard {out / 'train-000000.tar'}: No space left on device")
    assert not list(out.glob("*.tar*")) and not list(out.glob(".*.tmp")) and not (out / "manifest.json").exists()


def test_finetune_on_a_full_disk_names_the_checkpoint_and_leaves_no_partial_file(
        shapes_dataset, tmp_path, monkeypatch, capsys):
    from lightning_fabric.plugins.io import torch_io

    def half_written(checkpoint, path):  # Lightning's write: some bytes land, then the disk is full
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch_io, "_atomic_save", half_written)
    cfg = write_yaml(tmp_path / "ft.yaml", ft_config(tmp_path, shapes_dataset))
    assert vlmr(["finetune", cfg]) == 2
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    one_line_error(capsys, f"cannot write checkpoint {ckpt}: No space left on device")
    assert not list(ckpt.parent.iterdir())


def test_calibrate_and_evaluate_on_a_full_disk_name_the_file(babyai_dataset, small_rm, tmp_path, full_disk, capsys):
    out = tmp_path / "cal" / "calibration.json"
    full_disk(".calibration.json.")
    assert vlmr(["calibrate", "babyai_goto", f"reward_model={small_rm}", f"data={babyai_dataset}", f"out={out}",
                 "logger=none", "plots=false", "min_positives=3"]) == 2
    one_line_error(capsys, f"cannot write {out}: No space left on device")
    full_disk(".eval.json.")
    assert vlmr(["evaluate", "--model", str(small_rm), "--data", str(babyai_dataset), "--out",
                 str(tmp_path / "eval.json"), "--quiet"]) == 2
    one_line_error(capsys, f"cannot write {tmp_path / 'eval.json'}: No space left on device")
    assert not out.exists() and not (tmp_path / "eval.json").exists() and leftovers(tmp_path) == []


def test_a_metrics_row_on_a_full_disk_is_dropped_whole(tmp_path, monkeypatch):
    import csv

    from vlmr.core import tracking

    log = tracking.StepLog("csv", tmp_path, {}, "vlmr", "x", "rl")
    log.log({"a": 1.0}, step=1)
    before = (tmp_path / "metrics.csv").read_text()

    class HalfWriter(csv.DictWriter):
        def writerow(self, row):
            self.writer.writerow(["2", "0.5"][:1])  # half a row reaches the file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tracking.csv, "DictWriter", HalfWriter)
    with pytest.raises(VlmrError, match=re.escape(f"cannot write {tmp_path / 'metrics.csv'}: No space left")):
        log.log({"a": 2.0}, step=2)
    assert (tmp_path / "metrics.csv").read_text() == before


def test_the_cli_turns_a_stray_os_error_into_one_line(monkeypatch, capsys):
    from vlmr import cli

    def boom(argv):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where/file.json")

    monkeypatch.setattr(cli, "configs_main", boom)
    assert cli.main(["configs"]) == 2
    one_line_error(capsys, "Permission denied: /some/where/file.json")

    def bug(argv):
        raise OSError("a bug, not the disk")

    monkeypatch.setattr(cli, "configs_main", bug)
    with pytest.raises(OSError, match="a bug"):  # not about a file or the disk: keeps its traceback
        cli.main(["configs"])


# ------------------------------------------------------------------------------------------------ modes of real runs
def test_runs_datasets_and_calibrations_follow_the_umask(shapes_dataset, tmp_path):
    from vlmr.calibrate.fit import CalibrateConfig, calibrate
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

    old = os.umask(0o027)
    try:
        collect(CollectConfig(name="d", source="shapes", out_dir=str(tmp_path / "data"), image_size=64,
                              frames=SplitFrames(train=8, val=8, test=8), shard_size=8), progress=False)
        finetune(build_config(FinetuneConfig, ft_config(tmp_path / "runs", shapes_dataset, logger="csv",
                                                        trainer={"max_steps": 1})))
        rm = tmp_path / "runs" / "run" / "reward_model"
        calibrate(CalibrateConfig(reward_model=str(rm), data=str(shapes_dataset), min_positives=1, logger="csv",
                                  limit=32), progress=False)
    finally:
        os.umask(old)
    paths = [p for p in tmp_path.rglob("*") if p.name != "__pycache__"]
    assert (rm / "adapter_model.safetensors") in paths and (rm / "calibration" / "report.md") in paths
    assert (tmp_path / "runs" / "run" / "checkpoints" / "last.ckpt") in paths
    wrong = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in paths
             if p.stat().st_mode & 0o777 != (0o750 if p.is_dir() else 0o640)}
    assert wrong == {}


# ------------------------------------------------------------------------------------------------ honest resume
@pytest.fixture(scope="module")
def trained(shapes_dataset, tmp_path_factory):
    """A LoRA run stopped at step 3 (its checkpoint), to resume with other settings."""
    out = tmp_path_factory.mktemp("resume")
    finetune(build_config(FinetuneConfig, ft_config(out, shapes_dataset), "test"))
    return out / "run"


def resumed(trained, tmp_path, data_dir, **extra) -> dict:
    shutil.copytree(trained, tmp_path / "run")
    return finetune(build_config(FinetuneConfig, ft_config(tmp_path, data_dir, **extra), "test"))


def test_every_setting_has_a_resume_policy():
    from vlmr.finetune.resume import POLICY, flatten

    cfg = build_config(FinetuneConfig, {"name": "x", "data": {"dir": "d"}})
    keys = set(flatten(dataclasses.asdict(cfg))) | {"lora", "data.content", "processes"}
    assert all(k in POLICY or k.split(".")[0] in POLICY for k in keys)
    assert {k.split(".")[0] for k in keys} <= set(POLICY)  # a new section is classified, not refused by default


@pytest.mark.parametrize("change, key", [
    ({"seed": 1}, "seed"),
    ({"data": {"batch_size": 16}}, "data.batch_size"),
    ({"data": {"shuffle_buffer": 8}}, "data.shuffle_buffer"),
    ({"loss": {"goal": 0.5}}, "loss.goal"),
    ({"lora": {"r": 8}}, "lora.r"),
    ({"model": {"templates": ["a photo of {goal}"]}}, "model.templates"),
])
def test_a_resume_that_changes_what_was_computed_is_refused(trained, shapes_dataset, tmp_path, change, key):
    with pytest.raises(VlmrError, match=rf"cannot resume .*step 3.*{re.escape(key)} \(.*resume=false") as err:
        resumed(trained, tmp_path, shapes_dataset, trainer={"max_steps": 5}, **change)
    assert "\n" not in str(err.value)
    # the offered way out works: start over with the new setting
    summary = finetune(build_config(FinetuneConfig, ft_config(tmp_path, shapes_dataset, resume=False, **change)))
    assert summary["start_step"] == 0 and summary["steps"] == 3


def test_other_data_is_refused_but_the_same_data_moved_is_not(trained, shapes_dataset, babyai_dataset, tmp_path):
    with pytest.raises(VlmrError, match=r"data\.content"):
        resumed(trained, tmp_path / "a", babyai_dataset, trainer={"max_steps": 4})
    moved = shutil.copytree(shapes_dataset, tmp_path / "moved")
    summary = resumed(trained, tmp_path / "b", moved, trainer={"max_steps": 4})
    assert summary["start_step"] == 3 and summary["resumes"] == [{"step": 3, "changed": {"trainer.max_steps": [3, 4]}}]


def test_logging_and_run_length_never_block_a_resume(trained, shapes_dataset, tmp_path):
    summary = resumed(trained, tmp_path, shapes_dataset, logger="csv", strict=True, save_merged=True,
                      data={"num_workers": 1}, model={"grad_checkpointing": True},
                      trainer={"max_steps": 5, "log_every_n_steps": 1, "checkpoint_every_n_steps": 1,
                               "limit_val_batches": 2, "max_minutes": 60.0})
    assert summary["start_step"] == 3 and summary["steps"] == 5


def test_a_changed_learning_rate_is_applied_from_the_checkpoint_and_recorded(trained, shapes_dataset, tmp_path,
                                                                              capsys):
    from vlmr.finetune.lit_module import ClipFinetuneModule

    summary = resumed(trained, tmp_path, shapes_dataset, optim={"lr": 1e-4, "warmup_steps": 2},
                      trainer={"max_steps": 6})
    assert "resuming at step 3 with changed settings" in capsys.readouterr().out
    change = {"step": 3, "changed": {"optim.lr": [3e-3, 1e-4], "trainer.max_steps": [3, 6]}}
    assert summary["start_step"] == 3 and summary["resumes"] == [change]
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["resumes"] == [change] and run_json["config"]["optim"]["lr"] == 1e-4
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["vlmr"]["resumes"] == [change]
    # the schedule is the new one: base lr 1e-4, at step 6 of a 6-step cosine, not the checkpoint's 3e-3
    module = ClipFinetuneModule(["a", "b"], {"arch": "vlmr-tiny"}, {"r": 4}, {}, {"lr": 1e-4, "warmup_steps": 2},
                                max_steps=6)
    for group in state["optimizer_states"][0]["param_groups"]:
        assert group["initial_lr"] == 1e-4 and group["lr"] == pytest.approx(1e-4 * module.lr_factor(6))
    assert state["lr_schedulers"][0]["base_lrs"] == [1e-4, 1e-4]


def test_max_steps_below_the_checkpoint_is_refused(trained, shapes_dataset, tmp_path):
    with pytest.raises(VlmrError, match=r"is at step 3, past trainer.max_steps=2"):
        resumed(trained, tmp_path, shapes_dataset, trainer={"max_steps": 2})


def test_the_nan_advice_works_when_followed(shapes_dataset, tmp_path, monkeypatch, capsys):
    """The loss blows up at step >= 4 while the learning rate is above 1e-3; the message's advice fixes it."""
    from vlmr.finetune.lit_module import ClipFinetuneModule

    real = ClipFinetuneModule.compute_losses

    def unstable(self, batch, need_candidates=True):
        total, *rest = real(self, batch, need_candidates)
        lr = self.trainer.optimizers[0].param_groups[0]["initial_lr"] if self.training else 0.0
        return (total * float("nan") if self.global_step >= 4 and lr > 1e-3 else total), *rest

    monkeypatch.setattr(ClipFinetuneModule, "compute_losses", unstable)
    cfg = write_yaml(tmp_path / "ft.yaml", ft_config(tmp_path, shapes_dataset, trainer={
        "max_steps": 8, "checkpoint_every_n_steps": 2}))
    assert vlmr(["finetune", cfg]) == 2
    line = one_line_error(capsys, "nan at step 4", "(step 4)")
    advice = re.search(r"e\.g\. (optim\.lr=\S+):", line).group(1)
    assert vlmr(["finetune", cfg, advice]) == 0  # followed literally: continues from step 4 and finishes
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["start_step"] == 4 and summary["steps"] == 8
    assert summary["resumes"][-1]["changed"]["optim.lr"] == [3e-3, 3e-4]
