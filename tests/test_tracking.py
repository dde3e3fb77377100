"""The one tracking module: PPO's step log (CSV rows appended, restarted with the run), Lightning loggers, W&B mode.

    .venv/bin/python -m pytest tests/test_tracking.py -q          (seconds)
"""

from __future__ import annotations

import csv
import os

import pytest

import vlmr.core.tracking as tracking
from vlmr.core.errors import VlmrError
from vlmr.core.tracking import StepLog, lightning_logger


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_step_log_appends_rows_and_widens_the_header_once_per_new_key(tmp_path, monkeypatch):
    rewrites = []
    real = tracking.atomic_write_text
    monkeypatch.setattr(tracking, "atomic_write_text", lambda path, text: rewrites.append(path) or real(path, text))
    log = StepLog("csv", tmp_path, {}, "vlmr", "run", "rl")
    log.log({"charts/SPS": 900, "losses/approx_kl": 0.0123456789}, step=512)
    first = (tmp_path / "metrics.csv").read_text()
    log.log({"charts/SPS": 950, "losses/approx_kl": 0.02}, step=1024)
    assert (tmp_path / "metrics.csv").read_text().startswith(first) and len(rewrites) == 1  # appended
    log.log({"charts/SPS": 990, "charts/episodic_return": 0.5, "reward/precision": None}, step=1536)
    log.close()
    assert len(rewrites) == 2  # two new keys widened the header in one rewrite
    got = rows(tmp_path / "metrics.csv")
    assert [r["global_step"] for r in got] == ["512", "1024", "1536"]
    assert got[0]["losses/approx_kl"] == "0.0123457" and got[0]["charts/episodic_return"] == ""
    assert got[2]["charts/episodic_return"] == "0.5" and got[2]["reward/precision"] == ""  # undefined -> empty


def test_a_rerun_after_an_abort_does_not_duplicate_rows(tmp_path):
    aborted = StepLog("csv", tmp_path, {}, "vlmr", "run", "rl")
    for step in (512, 1024):
        aborted.log({"charts/SPS": 1.0}, step=step)  # killed here: never closed
    rerun = StepLog("csv", tmp_path, {}, "vlmr", "run", "rl")  # PPO restarts from step 0
    rerun.log({"charts/SPS": 2.0}, step=512)
    assert [(r["global_step"], r["charts/SPS"]) for r in rows(tmp_path / "metrics.csv")] == [("512", "2")]


def test_logger_none_writes_nothing_and_unknown_loggers_are_named(tmp_path):
    StepLog("none", tmp_path, {}, "vlmr", "run", "rl").log({"charts/SPS": 1.0}, step=1)
    assert not (tmp_path / "metrics.csv").exists() and lightning_logger("none", tmp_path, {}, "vlmr", "x", True) is False
    with pytest.raises(VlmrError, match="logger 'tensorboard' is not one of wandb, csv, none"):
        StepLog("tensorboard", tmp_path, {}, "vlmr", "run", "rl")


def test_wandb_logger_is_offline_by_default_and_a_resume_keeps_its_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "unset")  # recorded, so the test leaves the variable as it found it
    monkeypatch.delenv("WANDB_MODE")
    first = lightning_logger("wandb", tmp_path, {"seed": 0}, "vlmr", "run", resume=True)
    assert os.environ["WANDB_MODE"] == "offline"
    run_id = (tmp_path / "wandb_id.txt").read_text().strip()
    assert first.version == run_id
    assert lightning_logger("wandb", tmp_path, {"seed": 0}, "vlmr", "run", resume=True).version == run_id
    fresh = lightning_logger("wandb", tmp_path, {"seed": 0}, "vlmr", "run", resume=False)  # resume=false: a new W&B run
    assert fresh.version != run_id and (tmp_path / "wandb_id.txt").read_text().strip() == fresh.version
    monkeypatch.setenv("WANDB_MODE", "online")
    tracking.wandb_offline_by_default()
    assert os.environ["WANDB_MODE"] == "online"  # the user's choice wins
