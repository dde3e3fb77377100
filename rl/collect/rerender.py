"""A labelled split drawn again at another size, and `vlmr evaluate --render-size N` on top of it.

    rendered = rerender_split("data/babyai_goto", "test", 224)   # -> data/babyai_goto/render-224/
    evaluate(EvaluateConfig(models=[...], data="data/babyai_goto", render_size=224))   # vlmr.run_evaluate

A reward model trained on 64 px frames may meet frames drawn at 224 px and resized to its input.
Upsampling the stored 64 px frames would not show what that costs: a frame drawn at 224 px has
other edges, other anti-aliasing and fills the frame differently. So the split is collected again
from its manifest's config with only `image_size` changed: the same env seeds and the same
behaviour policy give the same episodes, drawn at N px. The frames land in `<data>/render-<N>/`,
a dataset of its own written by `vlmr collect` (atomic shards, resumable, reused while its config
is current); the reward model resizes them to its input size as it does any frame. The keys,
missions and labels of the rendered split are checked against the original's, so a source whose
episodes depend on the frame size is refused rather than measured on other episodes.

This lives in vlmr.rl because rendering needs the environments; the scoring itself is
vlmr.calibrate.evaluate's.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmr.calibrate.evaluate import EvaluateConfig
from vlmr.calibrate.evaluate import evaluate as evaluate_frames
from vlmr.calibrate.evaluate import main as evaluate_main
from vlmr.rl.collect.collect import CollectConfig, collect

from vlmr.core.config import build_config
from vlmr.core.dataset import SPLITS, read_manifest, split_shards
from vlmr.core.errors import VlmrError


def render_dir(data_dir: str | Path, size: int) -> Path:
    """Where the frames of `data_dir` drawn at `size` px are kept."""
    return Path(data_dir) / f"render-{int(size)}"


def _split_meta(data_dir: Path, split: str) -> list[tuple[str, str | None, dict]]:
    """(key, mission, labels) of every sample of a split, in order; reads meta.json only, no frames."""
    import webdataset as wds

    urls = [str(p) for p in split_shards(data_dir, split)]
    out = []
    for raw in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        meta = json.loads(raw["meta.json"])
        out.append((raw["__key__"], meta.get("mission"), meta.get("labels")))
    return out


def rerender_split(data_dir: str | Path, split: str, size: int, progress: bool = False, strict: bool = False,
                   workers: int = 1) -> Path:
    """The episodes of `split` drawn again at `size` px (collected once, then reused); returns the dataset folder."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if split not in SPLITS:
        raise VlmrError(f"--split {split!r}: re-rendering knows the splits {', '.join(SPLITS)}")
    if not isinstance(manifest.get("config"), dict):
        raise VlmrError(f"{data_dir}: the manifest records no collection config, so its episodes cannot be drawn "
                        "again at another size; recollect it with `vlmr collect`")
    config = dict(manifest["config"])
    samples = int(manifest["splits"].get(split, {}).get("samples") or 0)
    if samples == 0:
        raise VlmrError(f"dataset {data_dir} has no {split!r} split to re-render")
    out = render_dir(data_dir, size)
    # only `split` is drawn, as planned and with its own top-up shards (the same episodes); train needs one
    # frame for the config to be valid (the split seeds are independent)
    planned = int((config.get("frames") or {}).get(split, samples))
    frames = {s: (planned if s == split else 0) for s in SPLITS} | ({} if split == "train" else {"train": 1})
    config.update(coverage_splits=[split], name=f"{config.get('name')}-render-{int(size)}", image_size=int(size),
                  out_dir=str(out), frames=frames, overwrite=True, strict=strict)
    cfg = build_config(CollectConfig, config, f"{data_dir}/manifest.json's collection config")
    collect(cfg, resume=True, workers=workers, progress=progress)
    original, rendered = _split_meta(data_dir, split), _split_meta(out, split)
    if original != rendered:
        where = next((i for i, (a, b) in enumerate(zip(original, rendered)) if a != b), min(len(original), len(rendered)))
        what = (f"sample {where} is {original[where][0]} there and {rendered[where][0]} here"
                if where < min(len(original), len(rendered)) else f"{len(original)} vs {len(rendered)} samples")
        raise VlmrError(f"the {split} split of {data_dir} drawn at {size} px in {out} does not show the same "
                        f"episodes ({what}, or their labels differ): source {cfg.source!r} does not replay its "
                        "episodes independently of the frame size, so --render-size cannot measure it")
    return out


def evaluate(cfg: EvaluateConfig, progress: bool = True) -> dict:
    """`vlmr evaluate`: cfg.render_size re-renders the split first (rerender_split), then scores as usual;
    cfg.paraphrases reword goals with BabyAI's goal parser."""
    rendered = None
    if cfg.render_size is not None:
        rendered = rerender_split(cfg.data, cfg.split, cfg.render_size, progress=progress, strict=cfg.strict)
    from vlmr.rl.envs.babyai_goals import goal_slots  # the paraphrases' {color} and {type}

    return evaluate_frames(cfg, progress=progress, rendered=rendered, goal_slots=goal_slots)


def main(argv: list[str] | None = None) -> int:
    return evaluate_main(argv, run=evaluate)
