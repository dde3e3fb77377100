"""What every run records next to its outputs (and in W&B): config, seed, versions, git commit."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("vlmr", "torch", "torchvision", "pytorch-lightning", "open_clip_torch", "peft",
            "torchmetrics", "wandb", "webdataset", "gymnasium", "minigrid", "crafter", "numpy")

REPO_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(repo: Path = REPO_ROOT) -> dict[str, str | bool]:
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": False}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": False}


def run_info(config: dict | None = None, seed: int | None = None) -> dict:
    return {
        "config": config,
        "seed": seed,
        "versions": package_versions(),
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
