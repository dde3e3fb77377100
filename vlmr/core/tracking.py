"""Experiment tracking for every stage, one module: logger = wandb | csv | none.

    lightning_logger("csv", run_dir, run_info, "vlmr", name, resume=True)  # finetune: a Lightning logger (or False)
    log = StepLog("csv", out_dir, run_info, "vlmr", name, "rl")      # PPO: one row per update
    log.log({"charts/SPS": 900, "losses/approx_kl": 0.01}, step=512); log.close()
    log_results("csv", out_dir, scalars, run_info, table=(cols, rows))  # calibrate/evaluate: one summary

W&B runs offline unless the user set WANDB_MODE (`wandb_offline_by_default`, the only place that
sets it); every W&B run gets the run's provenance (run.json) as its config. csv writes
`metrics.csv` into the run folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from pathlib import Path

from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_text, write_error

LOGGERS = ("wandb", "csv", "none")


def check_logger(kind: str) -> None:
    if kind not in LOGGERS:
        raise VlmrError(f"logger {kind!r} is not one of {', '.join(LOGGERS)}")


def wandb_offline_by_default() -> None:
    """W&B stays on this machine unless the user asks for it (WANDB_MODE=online and `wandb login`)."""
    os.environ.setdefault("WANDB_MODE", "offline")


def wandb_run(out_dir: Path, run_info: dict, project: str, name: str | None, job_type: str, **init):
    """A fresh W&B run in out_dir/wandb with the run's provenance as its config."""
    wandb_offline_by_default()
    import wandb

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return wandb.init(project=project, name=name, job_type=job_type, config=run_info, dir=str(out_dir),
                      reinit="create_new", **init)


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


# ------------------------------------------------------------------------------------------------ training loops
def lightning_logger(kind: str, run_dir: Path, run_info: dict, project: str, name: str, resume: bool, rank: int = 0):
    """The Lightning logger for a finetune run (False for none), with the run's provenance as its config
    (csv: hparams.yaml). A resumed W&B run continues the same run id, kept in run_dir/wandb_id.txt;
    rank 0 writes it (the other DDP ranks do not log)."""
    check_logger(kind)
    if kind == "none":
        return False
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        logger = CSVLogger(save_dir=str(run_dir), name="csv")
        logger.log_hyperparams({"run": run_info})
        return logger
    from pytorch_lightning.loggers import WandbLogger

    wandb_offline_by_default()
    id_file = Path(run_dir) / "wandb_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() and resume else ""
    if not run_id:
        import secrets

        run_id = secrets.token_hex(4)  # W&B run ids are short lowercase alphanumerics
        if rank == 0:
            atomic_write_text(id_file, run_id)
    return WandbLogger(project=project, name=name, save_dir=str(run_dir), id=run_id, resume="allow", config=run_info,
                       job_type="finetune")


def finish_lightning_logger(logger) -> None:
    """End a finetune's W&B run: Lightning's WandbLogger would otherwise hand the still-open run to the next
    finetune in this process (a pipeline), which would log into it."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        logger.experiment.finish()  # a no-op stand-in on DDP ranks other than 0


class StepLog:
    """Metrics of a loop, one row per call: metrics.csv (csv and wandb) and a W&B run (wandb).

    The CSV is started afresh when the log opens: a run that restarts from step 0 (PPO does not resume)
    never keeps the rows of an aborted attempt. Rows are appended; a key first seen later (e.g. the
    first finished episode's return) widens the header, which rewrites the file once.
    """

    def __init__(self, kind: str, out_dir: Path, run_info: dict, project: str, name: str, job_type: str):
        check_logger(kind)
        self.kind, self.path, self.columns, self.run = kind, Path(out_dir) / "metrics.csv", [], None
        if kind != "none":
            self.path.unlink(missing_ok=True)
        if kind == "wandb":
            self.run = wandb_run(out_dir, run_info, project, name, job_type)

    def log(self, metrics: dict, step: int) -> None:
        if self.kind == "none":
            return
        row = {"global_step": step, **metrics}
        new = [k for k in row if k not in self.columns]
        if new:
            self._widen(new)
        size = self.path.stat().st_size if self.path.is_file() else 0
        try:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns, lineterminator="\n").writerow(
                    {k: "" if v is None else f"{v:.6g}" for k, v in row.items()})
        except OSError as e:  # a full disk: drop the half-written row, name the file
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)
            raise write_error(self.path, e) from None
        if self.run is not None:
            self.run.log(metrics, step=step)

    def _widen(self, new: list[str]) -> None:
        rows = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        self.columns += new
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


# ------------------------------------------------------------------------------------------------ one-off results
def log_results(logger: str, out_dir: Path, scalars: dict[str, float], run_info: dict, project: str = "vlmr",
                name: str | None = None, table: tuple[list[str], list[list]] | None = None,
                images: list[Path] = (), job_type: str = "calibrate") -> Path | None:
    """Log summary scalars, a per-goal table and images. Returns the file or run dir written, if any."""
    check_logger(logger)
    if logger == "none":
        return None
    if logger == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["metric", "value"])
        for k in sorted(scalars):
            writer.writerow([k, scalars[k]])
        return atomic_write_text(Path(out_dir) / "metrics.csv", buf.getvalue())
    import wandb

    run = wandb_run(out_dir, run_info, project, name, job_type)
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
    return Path(out_dir) / "wandb"
