"""`vlmr scaling CONFIG`: the paper's scaling study. Reward quality (and agent success) against model size.

    vlmr scaling configs/pipeline/scaling.yaml            # every size, then results.json, scaling.png, report.md
    vlmr scaling configs/pipeline/scaling.yaml --plot-only

For each model in the config it runs one `vlmr pipeline` chain (named <name>_<arch>):
the same shapes pretraining recipe, the same domain data rendered at the model's
frame_size (its input size unless set), zero-shot and LoRA-adapted reward models,
calibration, evaluation, and `vlmr compare` when the base pipeline has a compare
stage. Each chain skips its finished stages, so an interrupted study resumes where
it stopped. Then it plots held-out AUROC (own-goal; pooled where frames have no
mission) and precision at the calibrated threshold against the parameter count,
for each arm, and final success when agents were trained.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

from vlmr.core.config import PositiveInt, config_dataclass, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, atomic_write_text, read_json
from vlmr.core.reporting import fmt, pyplot, save_figure


@config_dataclass
class ScalingModel:
    arch: str  # open_clip architecture (configs/models/*.json or a stock one)
    image_size: PositiveInt  # the architecture's input size
    frame_size: PositiveInt | None = None  # size the domain frames are rendered at (pipeline frame_size); null = image_size


@config_dataclass
class ScalingConfig:
    CONFIG_REFS: ClassVar[tuple[str, ...]] = ("pipeline",)  # resolves next to the YAML file that names it
    name: str  # study name: chains are <name>_<arch>, the study's outputs go to {runs_dir}/{name}/
    pipeline: str  # the pipeline YAML whose chain runs once per model (configs/pipeline/...)
    models: list[ScalingModel]  # sizes to compare, smallest first
    set: dict[str, Any] = dataclasses.field(default_factory=dict)  # overrides of that pipeline config, every model
    runs_dir: str = "runs"  # parent folder of the chains and the study
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')


def chain_config(cfg: ScalingConfig, model: ScalingModel):
    from vlmr.rl.experiments.pipeline import PipelineConfig
    from vlmr.rl.experiments.stage_runner import StageSection, stage_config

    wiring = {"name": f"{cfg.name}_{model.arch}", "arch": model.arch, "image_size": model.image_size,
              "frame_size": model.frame_size, "runs_dir": cfg.runs_dir, "strict": cfg.strict}
    return stage_config(PipelineConfig, StageSection(config=cfg.pipeline, set=cfg.set), wiring,
                        f"scaling model {model.arch}")


def parameter_count(checkpoint: Path) -> int:
    """Parameters of the whole CLIP (both towers), read from the safetensors header without loading weights."""
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def collect_row(run_dir: Path, model: ScalingModel) -> dict:
    """One model's numbers from its chain's outputs."""
    from vlmr.calibrate.evaluate import read_results
    from vlmr.rl.experiments.pipeline_stages import headline

    evaluated = read_results(run_dir / "evaluate" / "results.json")
    arms, views = {}, set()
    for m in evaluated["models"]:
        view, head = headline(m["metrics"]["macro"])  # own-goal on BabyAI, pooled where frames have no mission
        views.add(view)
        arms[m["name"]] = {"auroc": head.get("auroc"), "precision": head.get("precision"),
                           "recall": head.get("recall")}
    compare = run_dir / "compare" / "results.json"
    if compare.is_file():
        for arm in read_json(compare, "compare results")["arms"]:
            arms.setdefault(arm["name"], {})["final_success"] = arm["final_success"]
    params = parameter_count(run_dir / "base" / "reward_model" / "open_clip_model.safetensors")
    return {"arch": model.arch, "image_size": model.image_size, "frame_size": model.frame_size or model.image_size,
            "params": params, "run_dir": str(run_dir), "view": "/".join(sorted(views)), "arms": arms}


def arm_names(rows: list[dict]) -> list[str]:
    """Every arm of the chains, in the order they first appear (the pipeline's: zero_shot, adapted, ...)."""
    return list(dict.fromkeys(a for r in rows for a in r["arms"]))


def plot(rows: list[dict], out: Path) -> Path:
    plt = pyplot()
    view = "/".join(sorted({r.get("view", "own-goal") for r in rows}))
    panels = [("auroc", f"{view} AUROC (test)"), ("precision", "precision at calibrated threshold (test)")]
    if any("final_success" in a for r in rows for a in r["arms"].values()):
        panels.append(("final_success", "agent success (ground truth)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        for arm in arm_names(rows):
            pts = [(r["params"], _mean(r["arms"].get(arm, {}).get(key))) for r in rows]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=arm)
        ax.set_xscale("log")
        ax.set_xticks([r["params"] for r in rows], [f"{r['arch']}\n{r['params'] / 1e6:.1f}M" for r in rows],
                      fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("parameters (both towers)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    return save_figure(fig, out, dpi=120)


def _mean(v):
    """A metric or a {'mean': ...} confidence-interval record -> its value."""
    return v.get("mean") if isinstance(v, dict) else v


def report(cfg: ScalingConfig, rows: list[dict], png: Path) -> str:
    # reward models only: ground truth has no AUROC
    arms = [a for a in arm_names(rows) if any(r["arms"].get(a, {}).get("auroc") is not None for r in rows)]
    lines = [f"# vlmr scaling study: {cfg.name}", "",
             f"One `{cfg.pipeline}` chain per model size. The base CLIPs are pretrained by vlmr on the synthetic "
             "shapes corpus, all with the same recipe: stand-ins for web-scale CLIP.", "",
             f"![scaling]({png.name})", "",
             f"Metrics: {'/'.join(sorted({r.get('view', 'own-goal') for r in rows}))}, test split; frame px: the size "
             "frames are rendered at, model px: the input size they are resized to.", "",
             "| model | params | frame px | model px | " + " | ".join(f"{a} AUROC | {a} precision" for a in arms) + " |",
             "|---|---|---|---|" + "---|---|" * len(arms)]
    for r in rows:
        cells = []
        for a in arms:
            m = r["arms"].get(a, {})
            cells += [fmt(m.get("auroc")), fmt(m.get("precision"))]
        lines.append(f"| {r['arch']} | {r['params'] / 1e6:.1f}M | {r.get('frame_size', r['image_size'])} | "
                     f"{r['image_size']} | " + " | ".join(cells) + " |")
    if any("final_success" in a for r in rows for a in r["arms"].values()):
        lines += ["", "Final ground-truth success (mean over seeds):", ""]
        lines += [f"- {r['arch']}: " + ", ".join(f"{a} {fmt(_mean(m.get('final_success')))}"
                                                 for a, m in r["arms"].items() if "final_success" in m) for r in rows]
    return "\n".join(lines) + "\n"


def scaling(cfg: ScalingConfig, plot_only: bool = False) -> Path:
    from vlmr.rl.experiments.pipeline import pipeline

    if not cfg.models:
        raise VlmrError("scaling: `models` is empty; list at least one {arch, image_size}")
    archs = [m.arch for m in cfg.models]
    if len(set(archs)) < len(archs):  # chains are named by arch: two entries would share one run folder
        raise VlmrError(f"scaling: `models` lists an architecture twice ({archs}); give each size once")
    rows = []
    for model in cfg.models:
        chain = chain_config(cfg, model)
        if not plot_only:
            print(f"== scaling: {model.arch} ({chain.name})", flush=True)
            pipeline(chain)
        rows.append(collect_row(Path(cfg.runs_dir) / chain.name, model))
    out = Path(cfg.runs_dir) / cfg.name
    atomic_write_json(out / "results.json", {"config": dataclasses.asdict(cfg), "rows": rows})
    png = plot(rows, out / "scaling.png")
    path = atomic_write_text(out / "report.md", report(cfg, rows, png))
    print(f"scaling {cfg.name}: {len(rows)} models; report: {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    def extra(parser):
        parser.add_argument("--plot-only", action="store_true", help="only gather finished chains' results and plot")

    return stage_main(argv, ScalingConfig, scaling, "vlmr scaling", __doc__.split("\n\n")[0], extra, kind="pipeline")
