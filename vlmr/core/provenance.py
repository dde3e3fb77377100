"""What every run records next to its outputs (and in W&B): config, seed, versions, git commits.

Two commits matter: vlmr's own (when it runs from a git checkout, as with `make install`; an installed
wheel is identified by its version instead) and the working directory's, the user's experiment repo.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("vlmr", "torch", "torchvision", "pytorch-lightning", "open_clip_torch", "peft",
            "torchmetrics", "wandb", "webdataset", "gymnasium", "minigrid", "crafter", "numpy")

# vlmr/core/provenance.py -> the checkout's root, when vlmr runs from one (it has pyproject.toml and .git)
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def vlmr_checkout() -> Path | None:
    root = SOURCE_ROOT
    return root if (root / "pyproject.toml").is_file() and (root / ".git").exists() else None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(repo: Path | None) -> dict[str, str | bool]:
    if repo is None:
        return {"commit": "none (not a git checkout)", "dirty": False}

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
        "git": git_state(vlmr_checkout()),  # vlmr's source
        "workdir_git": git_state(Path.cwd()),  # the experiment's folder
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
