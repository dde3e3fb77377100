"""Send calibration and evaluation results to the configured logger: wandb | csv | none.

W&B runs offline unless the user set WANDB_MODE (docs/DESIGN.md); the run's config
is the provenance record (run.json). csv writes `metrics.csv` next to the outputs.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_text


def flatten(prefix: str, d: dict | None) -> dict[str, float]:
    """Nested metric dicts -> {'prefix/a/b': number}; counts and notes of nested views are kept, None dropped."""
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict):
            out.update(flatten(key, v))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def log_results(logger: str, out_dir: Path, scalars: dict[str, float], run_info: dict, project: str = "vlmr",
                name: str | None = None, table: tuple[list[str], list[list]] | None = None,
                images: list[Path] = (), job_type: str = "calibrate") -> Path | None:
    """Log summary scalars, a per-goal table and images. Returns the file or run dir written, if any."""
    if logger == "none":
        return None
    if logger == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["metric", "value"])
        for k in sorted(scalars):
            writer.writerow([k, scalars[k]])
        return atomic_write_text(Path(out_dir) / "metrics.csv", buf.getvalue())
    if logger != "wandb":
        raise VlmrError(f"logger {logger!r} is not one of wandb, csv, none")
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=name, job_type=job_type, config=run_info, dir=str(out_dir),
                     reinit="finish_previous")
    try:
        payload: dict = dict(scalars)
        if table is not None:
            payload["reward/per_goal"] = wandb.Table(columns=table[0], data=table[1])
        for path in images:
            payload[f"charts/{Path(path).stem}"] = wandb.Image(str(path))
        run.log(payload)
        run.summary.update(scalars)
    finally:
        run.finish()
    return out_dir / "wandb"
