"""Reward throughput: vlmr's batched reward against the bare encoder (the limit) and a naive loop.

    python -m vlmr.bench.reward --models vlmr-tiny vlmr-small --batch-sizes 1 16 64 256

Three arms, timed side by side in one process so that the ratios are fair on a noisy machine
(batched and limit alternate call by call; medians):
- batched: RewardModel.reward on uint8 frames (preprocessing on tensors, cached text embeddings);
- limit:   model.encode_image on pre-made normalised tensors (text is cached, so this bounds us);
- naive:   what a typical user script does: PIL preprocess per frame, encode_image and
           encode_text of every goal prompt on every call, batch 1.
Frames are rendered at the model's input size (vlmr's collection and RL do this) unless
`frame_size` asks for bigger frames, which adds the resize. On a GPU the table also gives
the share of the device's dense bf16 peak FLOP/s that the batched reward reaches: the
encoder's forward FLOPs per frame (torch's FLOP counter) times frames/s, over the peak.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

GOALS = ["go to the red ball", "go to the blue key", "go to the green box", "go to the purple ball",
         "go to the yellow key", "go to the grey box"]


# dense bf16 peak FLOP/s by device-name fragment (vendor datasheets, without sparsity)
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def image_flops_per_frame(model, image_size: int) -> float:
    """Forward FLOPs of the image encoder for one frame (torch's FLOP counter; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.encode_image(x)
    return float(counter.get_total_flops())


def peak_flops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def timed(fn, min_seconds: float, min_calls: int = 2) -> float:
    """Seconds per call of fn, after one warm-up call."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def timed_pair(fn_a, fn_b, min_seconds: float, min_rounds: int = 5) -> tuple[float, float]:
    """Median seconds per call of fn_a and fn_b, called alternately so that machine noise hits both alike."""
    fn_a(), fn_b()
    a, b, start = [], [], time.perf_counter()
    while len(a) < min_rounds or time.perf_counter() - start < 2 * min_seconds:
        for fn, out in ((fn_a, a), (fn_b, b)) if len(a) % 2 == 0 else ((fn_b, b), (fn_a, a)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return float(np.median(a)), float(np.median(b))


def reward_throughput(arch: str, batch_sizes=(1, 16, 64, 256), frame_size: int | None = None,
                      min_seconds: float = 1.0, naive_frames: int = 16, device: str = "cpu") -> dict:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    from vlmr.finetune.reward_model import RewardModel

    torch.manual_seed(0)
    rm = RewardModel.create(arch, GOALS, device=device)
    size = frame_size or rm.spec.image_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (max(batch_sizes), size, size, 3), dtype=np.uint8)
    goal_ids = rng.integers(0, len(GOALS), max(batch_sizes))
    pil_transform = image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(rm.clip)), is_train=False)
    pixels = torch.stack([pil_transform(Image.fromarray(f)) for f in frames[:max(batch_sizes)]]).to(device)
    prompts = [GOALS[int(g)] for g in goal_ids]

    def naive_one(i):
        with torch.inference_mode():
            x = pil_transform(Image.fromarray(frames[i]))[None].to(device)
            img = torch.nn.functional.normalize(rm.clip.encode_image(x), dim=-1)
            txt = torch.nn.functional.normalize(rm.clip.encode_text(rm.tokenizer(GOALS).to(device)), dim=-1)
            p = (img @ txt.T / 0.01).softmax(-1)[0, GOALS.index(prompts[i])]
            return float(p >= 0.5)

    naive_s = timed(lambda: [naive_one(i) for i in range(naive_frames)], min_seconds) / naive_frames
    rows = []
    for bs in batch_sizes:
        def limit(bs=bs):
            with torch.inference_mode():
                rm.clip.encode_image(pixels[:bs])

        batched_s, limit_s = timed_pair(lambda bs=bs: rm.reward(frames[:bs], goal_ids[:bs]), limit, min_seconds)
        rows.append({"batch_size": bs, "batched_fps": bs / batched_s, "limit_fps": bs / limit_s,
                     "naive_fps": 1 / naive_s, "batched_over_limit": limit_s / batched_s,
                     "batched_over_naive": naive_s * bs / batched_s})
    params = sum(p.numel() for p in rm.clip.parameters())
    flops = image_flops_per_frame(rm.clip, rm.spec.image_size)
    peak = peak_flops(device)
    for row in rows:  # share of the accelerator's bf16 peak that the batched reward reaches (GPU only)
        row["fraction_of_peak"] = flops * row["batched_fps"] / peak if peak else None
    return {"arch": arch, "params": params, "frame_size": size, "device": device, "image_gflops": flops / 1e9,
            "peak_flops": peak, "threads": torch.get_num_threads(), "rows": rows}


def markdown(results: list[dict]) -> str:
    lines = ["| model | GFLOP/frame | frame px | batch | batched fps | limit fps | naive fps | batched/limit | "
             "batched/naive | of bf16 peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["rows"]:
            peak = "-" if row.get("fraction_of_peak") is None else f"{100 * row['fraction_of_peak']:.1f}%"
            lines.append(f"| {r['arch']} | {r.get('image_gflops', float('nan')):.2f} | {r['frame_size']} | "
                         f"{row['batch_size']} | {row['batched_fps']:.0f} | {row['limit_fps']:.0f} | "
                         f"{row['naive_fps']:.1f} | {row['batched_over_limit']:.2f} | {row['batched_over_naive']:.1f}x | "
                         f"{peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vlmr-tiny", "vlmr-small", "ViT-B-32"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16, 64, 256])
    parser.add_argument("--frame-size", type=int, help="render frames at this size instead of the model's")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = [reward_throughput(a, args.batch_sizes, args.frame_size, args.min_seconds, device=device)
               for a in args.models]
    print(markdown(results))
    if args.json:
        from vlmr.core.files import atomic_write_json
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
