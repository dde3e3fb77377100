"""LoRA versus full fine-tuning cost: trainable-parameter fraction, training images/s, peak memory.

    python -m vlmr.bench.lora                       # ViT-B-32 and vlmr-small
    python -m vlmr.bench.lora --archs vlmr-tiny --steps 2 --batch-size 8 --json
    python -m vlmr.bench.lora --device cuda                                     # GPU: bf16 autocast

    from vlmr.bench.lora import bench_lora
    results = bench_lora(["vlmr-small"], batch_size=32, steps=4)    # dict, see below

Weights are random (cost does not depend on them). Each arm (arch x lora|full) runs
in a fresh Python subprocess, so one arm's allocations cannot hide in another's
numbers. A step is exactly the training step of `vlmr finetune` (ClipFinetuneModule:
contrastive + goal loss, AdamW), on random frames at the model's input size.

Peak memory. GPU: `torch.cuda.max_memory_allocated` over the measured steps.
CPU: the process's peak resident set size (VmHWM in /proc/self/status, the kernel's
high-water mark of this address space; not getrusage's ru_maxrss, which a subprocess inherits
from the parent it was forked from, across exec) minus the resident size after imports, before the model is
built; so it counts weights, gradients, optimizer state and activations. The memory
run of each arm sets MALLOC_MMAP_THRESHOLD_=65536, so glibc maps every tensor over
64 KiB separately and unmaps it when freed: the resident size then follows live memory
instead of the heap's high-water mark. That slows allocation, so images/s comes from
a second run of the arm with the default allocator (whose peak RSS is also reported). (tracemalloc would see none of it:
torch allocates outside Python's allocator.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DEFAULT_ARCHS = ("ViT-B-32", "vlmr-small")
GOALS = [f"go to the {c} {t}" for c in ("red", "green", "blue", "purple", "yellow", "grey") for t in ("ball", "box", "key")]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def measure_arm(arch: str, mode: str, batch_size: int, steps: int, device: str = "cpu", rank: int = 8,
                grad_checkpointing: bool = False) -> dict:
    """Time `steps` training steps of one arm in this process (call it in a fresh one; see run_arm)."""
    import numpy as np
    import torch

    from vlmr.finetune.lit_module import ClipFinetuneModule

    rss_before = _rss_bytes()
    torch.manual_seed(0)
    lora = {"r": rank, "alpha": 2 * rank} if mode == "lora" else None
    model = {"arch": arch, "grad_checkpointing": grad_checkpointing}
    module = ClipFinetuneModule(GOALS, model, lora, {}, {"warmup_steps": 0}, max_steps=steps + 1).to(device)
    module.train()
    model_bytes = _rss_bytes() - rss_before
    opt = module.configure_optimizers()["optimizer"]
    size = module.pre["size"][0]
    rng = np.random.default_rng(0)
    goal_ids = rng.integers(0, len(GOALS), batch_size)
    labels = torch.zeros(batch_size, len(GOALS))
    labels[torch.arange(batch_size), torch.from_numpy(goal_ids)] = 1.0
    batch = {"frames": torch.from_numpy(rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)),
             "captions": [GOALS[g] for g in goal_ids], "labels": labels}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))

    def step():
        with autocast:
            loss = module.compute_losses(batch, need_candidates=False)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: allocator, optimizer state, kernels
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.startswith("cuda"):
        peak, how = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
    else:
        peak, how = _peak_rss_bytes() - rss_before, "peak RSS (VmHWM) - RSS after imports"
    params = sum(p.numel() for n, p in module.clip.named_parameters() if "lora_" not in n)
    trainable = sum(p.numel() for p in module.clip.parameters() if p.requires_grad)
    return {"arch": arch, "mode": mode, "device": device, "batch_size": batch_size, "steps": steps,
            "image_size": size, "images_per_s": batch_size * steps / seconds, "peak_memory_mb": peak / 2**20,
            "model_memory_mb": model_bytes / 2**20 if not device.startswith("cuda") else None,
            "memory_measure": how, "base_params": params, "trainable_params": trainable,
            "trainable_fraction": trainable / params, "grad_checkpointing": grad_checkpointing,
            "threads": torch.get_num_threads()}


def run_arm(arch: str, mode: str, batch_size: int, steps: int, device: str = "cpu", rank: int = 8,
            grad_checkpointing: bool = False, exact_memory: bool = False) -> dict:
    """measure_arm in a fresh subprocess; its JSON result is the last line of its stdout.

    exact_memory: glibc keeps freed big blocks in its heap once its mmap threshold adapts upwards, so RSS remembers
    dead tensors; a fixed threshold maps every big tensor separately and unmaps it when freed, so RSS follows live
    memory. It slows allocation, so speed is measured in a separate run without it.
    """
    args = json.dumps({"arch": arch, "mode": mode, "batch_size": batch_size, "steps": steps, "device": device,
                       "rank": rank, "grad_checkpointing": grad_checkpointing})
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "65536"} if exact_memory else {})}
    proc = subprocess.run([sys.executable, "-m", "vlmr.bench.lora", "--arm", args], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark arm {arch}/{mode} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_lora(archs=DEFAULT_ARCHS, batch_size: int | None = None, steps: int = 3, device: str = "cpu",
               rank: int = 8, grad_checkpointing: bool = False) -> dict:
    """{arch: {"lora": arm, "full": arm, "trainable_fraction", "memory_ratio", "speed_ratio"}} (ratios: lora / full).

    On CPU each arm runs twice: once for speed (default allocator), once for peak memory (exact_memory).
    """
    out = {}
    for arch in archs:
        bs = batch_size or (16 if arch.startswith("ViT") else 64)
        arms = {}
        for mode in ("lora", "full"):
            arm = run_arm(arch, mode, bs, steps, device, rank, grad_checkpointing)
            if not device.startswith("cuda"):
                mem = run_arm(arch, mode, bs, steps, device, rank, grad_checkpointing, exact_memory=True)
                arm.update(peak_memory_mb_default_malloc=arm["peak_memory_mb"], peak_memory_mb=mem["peak_memory_mb"],
                           model_memory_mb=mem["model_memory_mb"],
                           memory_measure=mem["memory_measure"] + " (MALLOC_MMAP_THRESHOLD_=65536)")
            arms[mode] = arm
        out[arch] = {**arms, "trainable_fraction": arms["lora"]["trainable_fraction"],
                     "memory_ratio": arms["lora"]["peak_memory_mb"] / arms["full"]["peak_memory_mb"],
                     "speed_ratio": arms["lora"]["images_per_s"] / arms["full"]["images_per_s"]}
    return out


def format_results(results: dict) -> str:
    lines = [f"{'arch':<12} {'mode':<5} {'batch':>5} {'img/s':>8} {'peak MB':>9} {'trainable':>12}"]
    for arch, r in results.items():
        for mode in ("lora", "full"):
            a = r[mode]
            lines.append(f"{arch:<12} {mode:<5} {a['batch_size']:>5} {a['images_per_s']:>8.1f} "
                         f"{a['peak_memory_mb']:>9.0f} {a['trainable_params']:>12,}")
        goal_frac = "ok" if r["trainable_fraction"] <= 0.02 else "above the 2% goal"
        goal_mem = "ok" if r["memory_ratio"] <= 0.6 else "above the 0.6x goal"
        lines.append(f"{arch:<12} LoRA trains {100 * r['trainable_fraction']:.2f}% of the parameters ({goal_frac}); "
                     f"memory {r['memory_ratio']:.2f}x of full ({goal_mem}); speed {r['speed_ratio']:.2f}x")
    first = next(iter(results.values()))["lora"]
    lines.append(f"memory: {first['memory_measure']}, one fresh process per arm; "
                 f"gradient checkpointing {'on' if first['grad_checkpointing'] else 'off'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmr.bench.lora", description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--batch-size", type=int, help="default: 16 for ViT-*, 64 for vlmr-*")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm (after one warm-up step)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (all attention and MLP layers, both towers)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grad-checkpointing", action="store_true", help="both arms recompute activations")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm, print its JSON
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(measure_arm(**json.loads(args.arm))))
        return 0
    results = bench_lora(args.archs, args.batch_size, args.steps, args.device, args.rank, args.grad_checkpointing)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
