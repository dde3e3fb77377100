"""`vlmr models` and `vlmr score`.

    vlmr models [--all] [--json]
    vlmr score --arch vlmr-tiny --goal "go to the red ball" --goal "open the blue door" a.png b.png
    vlmr score --model runs/demo/adapted --calibration runs/demo/adapted/calibration.json data/demo/test-000000.tar --limit 20
    vlmr score --model runs/demo/adapted --goal "go to the purple box" frame.png   # a goal outside the saved set

With --model, a --goal outside the model's goal set is scored too: against the saved candidates plus itself,
at the calibration's temperature and threshold for new goals (fitted on goals held out of fine-tuning, else
the pooled fit of the saved goals), and shown as not calibrated (--strict refuses it).

A shard is checked like every dataset reader checks it: its sha256 against the manifest.json beside it (when one
lists it) and each frame against its stored frame hash; any damage is a one-line error, never partial scores.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from vlmr.core.errors import VlmrError
from vlmr.core.quality import STRICT_HELP
from vlmr.finetune.models import register_model_configs

COMMON_ARCHS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-H-14", "ViT-SO400M-14-SigLIP")


def model_rows(show_all: bool) -> list[dict]:
    import open_clip

    from vlmr.finetune.models import offline_tags

    ours = register_model_configs()
    names = open_clip.list_models() if show_all else [*ours, *(a for a in COMMON_ARCHS if a in open_clip.list_models())]
    rows = []
    for name in names:
        cfg = open_clip.get_model_config(name) or {}
        tags = open_clip.list_pretrained_tags_by_model(name)
        cached = offline_tags(name)
        if name in ours:
            offline = "yes (random init; `vlmr pipeline` pretrains a base)"
        else:
            offline = f"yes: {', '.join(cached)}" if cached else "no (download needed)"
        rows.append({"name": name, "source": "vlmr" if name in ours else "open_clip",
                     "image_size": cfg.get("vision_cfg", {}).get("image_size"), "pretrained_tags": tags,
                     "offline_weights": cached, "offline": offline})
    return rows


def models_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vlmr models", description="List architectures and offline weights.")
    parser.add_argument("--all", action="store_true", help="every open_clip architecture, not only common ones")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = model_rows(args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'architecture':<28} {'source':<9} {'px':>4} {'tags':>4}  usable offline")
    for r in rows:
        print(f"{r['name']:<28} {r['source']:<9} {str(r['image_size']):>4} {len(r['pretrained_tags']):>4}  {r['offline']}")
    return 0


def bits_per_channel(image) -> int:
    """Bits per channel of an opened PIL image as stored in the file (Pillow opens 16-bit RGB PNGs as 8-bit RGB)."""
    if image.mode in ("I", "F"):
        return 32
    rawmodes = [t.args if isinstance(t.args, str) else (t.args or ("",))[0] for t in (image.tile or [])]
    return 16 if image.mode.startswith("I;16") or any("16" in str(r) for r in rawmodes) else 8


def read_image(path: Path) -> np.ndarray:
    """An image file as a uint8 H x W x 3 frame. Deeper images are reduced to 8 bits with a warning (the frames
    vlmr scores are 8-bit RGB); 16-bit greyscale is scaled down, where PIL's own conversion would clip it."""
    from PIL import Image

    image = Image.open(path)
    bits = bits_per_channel(image)
    if bits > 8:
        warnings.warn(f"{path}: {bits} bits per channel; vlmr scores 8-bit RGB frames, so it is reduced to 8 bits",
                      UserWarning, stacklevel=3)
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.clip(np.asarray(image).astype(np.float64) / 257.0, 0, 255)  # 65535 -> 255
        return np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def load_inputs(paths: list[str], limit: int | None) -> list[tuple[str, np.ndarray]]:
    """Image files and webdataset shards -> (name, uint8 H x W x 3 frame) pairs."""
    from PIL import UnidentifiedImageError

    items = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise VlmrError(f"input not found: {path}")
        if path.suffix == ".tar":  # checked like every reader does; damage is a one-line error (vlmr.core.verify)
            from vlmr.core.verify import shard_frames

            for key, frame in shard_frames(path):
                items.append((f"{path.name}:{key}", frame))
                if limit and len(items) >= limit:
                    return items
        else:
            try:
                items.append((str(path), read_image(path)))
            except (UnidentifiedImageError, OSError) as e:
                raise VlmrError(f"cannot read image {path}: {e}") from None
        if limit and len(items) >= limit:
            break
    return items


def score_main(argv: list[str]) -> int:
    from vlmr.finetune.reward_model import RewardModel

    parser = argparse.ArgumentParser(prog="vlmr score", description="Score frames for goals: P(g|o) and the reward.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="reward-model directory")
    src.add_argument("--arch", help="open_clip architecture for a zero-shot model (with --pretrained)")
    parser.add_argument("--pretrained", help="open_clip tag or checkpoint path, with --arch")
    parser.add_argument("--goal", action="append", default=[],
                        help="a goal sentence (repeatable); with --model, goals outside its goal set are scored too, "
                             "marked not calibrated")
    parser.add_argument("--negative", action="append", default=[], help="a negative caption (repeatable), with --arch")
    parser.add_argument("--calibration", help="calibration.json for --model")
    parser.add_argument("--limit", type=int, help="score at most this many frames")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--strict", action="store_true", help=STRICT_HELP)
    parser.add_argument("inputs", nargs="+", help="image files (.png, .jpg) or webdataset shards (.tar)")
    args = parser.parse_args(argv)
    for flag, value in (("--batch-size", args.batch_size), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise VlmrError(f"{flag} must be >= 1, got {value}")

    from vlmr.calibrate.fit import cli_warnings

    if args.model:
        with cli_warnings():  # unguaranteed or uncalibrated goals: one "warning: ..." line each
            rm = RewardModel.load(args.model, calibration=args.calibration, strict=args.strict, goals=args.goal)
    else:
        if not args.goal:
            raise VlmrError("--arch needs at least one --goal")
        if args.calibration:
            raise VlmrError("--calibration needs --model: a calibration belongs to a saved reward model")
        rm = RewardModel.create(args.arch, args.goal, pretrained=args.pretrained, negatives=args.negative)
    goals = args.goal or rm.goals
    rm.goal_index(goals)  # unknown goals fail here, before any scoring
    with cli_warnings():  # a shard without a manifest to check it against: one "warning: ..." line
        items = load_inputs(args.inputs, args.limit)

    results = []
    for start in range(0, len(items), args.batch_size):
        chunk = items[start:start + args.batch_size]
        by_shape: dict[tuple, list[int]] = {}
        for i, (_, frame) in enumerate(chunk):
            by_shape.setdefault(frame.shape, []).append(i)
        for indices in by_shape.values():
            frames = np.stack([chunk[i][1] for i in indices])
            probs = {g: rm.probs(frames, [g] * len(frames)).tolist() for g in goals}
            rewards = {g: rm.reward(frames, [g] * len(frames)).tolist() for g in goals}
            for j, i in enumerate(indices):
                results.append({"input": chunk[i][0], "probs": {g: probs[g][j] for g in goals},
                                "rewards": {g: rewards[g][j] for g in goals}})
    if args.json:
        calibrated = rm.calibrated
        print(json.dumps({"model_id": rm.model_id, "reward_mode": rm.spec.reward_mode,
                          "calibrated": {g: calibrated[g] for g in goals}, "new_goals": rm.new_goals,
                          "new_goal_fits": rm.new_goal_fits,
                          "results": results}, indent=2))
        return 0
    print(f"reward model {rm.model_id[:12]} ({rm.spec.arch}), mode {rm.spec.reward_mode}; P(g|o), * = reward >= threshold")
    print(f"  {'':<5} {'calibrated':<22} goal")
    for k, g in enumerate(goals):
        fit = rm.new_goal_fits.get(g, "")
        cal = ("yes" if rm.calibrated[g] else "no: new, pooled fit" if fit == "fit.shared"
               else "no: new, new-goal fit" if fit.startswith("fit.new_goal") else "no: new goal" if g in rm.new_goals
               else "no")
        print(f"  {'[' + str(k) + ']':<5} {cal:<22} {g}")
    print(f"{'input':<40} " + " ".join(f"{'[' + str(k) + ']':>9}" for k in range(len(goals))))
    for r in results:
        cells = [f"{r['probs'][g]:8.3f}{'*' if r['probs'][g] >= float(rm.thresholds[rm.goal_to_index[g]]) else ' '}"
                 for g in goals]
        print(f"{r['input'][-40:]:<40} " + " ".join(cells))
    return 0
