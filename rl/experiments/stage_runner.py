"""Stages that skip themselves when done: the machinery under `vlmr pipeline` (and `vlmr scaling`).

    runner = StageRunner(Path("runs/demo"), force={"adapted"})
    runner.run("adapted", {"config": ..., "inputs": ...}, valid=lambda: ..., body=lambda: "one-line summary")
    cfg = stage_config(FinetuneConfig, StageSection(config="configs/finetune/babyai_lora.yaml"), {"name": "x"}, "x")

A stage's record, runs/<name>/pipeline/<stage>.json, holds the fingerprint of what it was run from (its
config plus the identities of its inputs, hashed by vlmr.core.config.config_fingerprint). The stage is
skipped while the fingerprint is the same and its outputs are still valid.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmr.core.config import build_config, config_dataclass, config_fingerprint, read_config_data
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, read_json


@config_dataclass
class StageSection:
    config: str  # the stage's own YAML config
    set: dict[str, Any] = dataclasses.field(default_factory=dict)  # values merged over that YAML (nested mappings)



def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_config(cls, section: StageSection, wiring: dict, what: str):
    """The stage's YAML, with the pipeline's `set` values and then its wiring (paths between stages) on top."""
    try:
        path, data = read_config_data(cls, section.config)
    except VlmrError as e:
        raise VlmrError(f"pipeline stage {what}: {e}") from None
    return build_config(cls, deep_merge(deep_merge(data, section.set), wiring), f"{path} (pipeline stage {what})")


class StageRunner:
    """Runs stages in order; records each one's fingerprint, wall time and one-line summary."""

    def __init__(self, run_dir: Path, force: set[str], stop_after: str | None = None):
        self.state_dir = run_dir / "pipeline"
        self.force = force
        self.stop_after = stop_after
        self.rows: list[dict] = []

    def run(self, name: str, fingerprint: dict, valid: Callable[[], bool], body: Callable[[], str]) -> str:
        fp = config_fingerprint(fingerprint)
        marker = self.state_dir / f"{name}.json"
        if name not in self.force and marker.is_file():
            old = read_json(marker, "pipeline stage record")
            if old.get("fingerprint") == fp and _safe(valid):
                print(f"[{name}] up to date, skipped ({old.get('summary', '')})", flush=True)
                self.rows.append({**old, "stage": name, "skipped": True})
                self._maybe_stop(name)
                return fp
        print(f"[{name}] running", flush=True)
        atomic_write_json(self.state_dir / "started" / f"{name}.json", {"stage": name, "fingerprint": fp})
        t0 = time.perf_counter()
        summary = body()
        row = {"stage": name, "fingerprint": fp, "summary": summary, "wall_s": round(time.perf_counter() - t0, 1)}
        atomic_write_json(marker, row)
        print(f"[{name}] done in {row['wall_s']:.0f} s: {summary}", flush=True)
        self.rows.append({**row, "skipped": False})
        self._maybe_stop(name)
        return fp

    def interrupted(self, name: str, fingerprint: dict) -> bool:
        """Whether the last attempt at this stage, with this very fingerprint, started and did not finish.

        Only then may a training stage resume its checkpoints; after a config change it starts over.
        """
        started = self.state_dir / "started" / f"{name}.json"
        if not started.is_file():
            return False
        fp = config_fingerprint(fingerprint)
        done = self.state_dir / f"{name}.json"
        finished = done.is_file() and read_json(done, "pipeline stage record").get("fingerprint") == fp
        return read_json(started, "pipeline stage record").get("fingerprint") == fp and not finished

    def _maybe_stop(self, name: str) -> None:
        if name == self.stop_after:
            raise StopPipeline(name)


class StopPipeline(Exception):
    """Raised after the stage named by --stop-after."""


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except (VlmrError, OSError, ValueError, KeyError):
        return False
