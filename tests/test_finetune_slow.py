"""Heavier fine-tuning checks, under the `slow` marker: DDP with two CPU processes (gloo), the LoRA benchmark.

    .venv/bin/python -m pytest tests/test_finetune_slow.py -q -m slow
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # two training processes plus a dataset build: ~1 minute on 2 cores
def test_ddp_two_cpu_processes(tmp_path):
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

    # shards of 64 so that each of the two processes gets its own train and val shards
    data = collect(CollectConfig(name="shapes", source="shapes", out_dir=str(tmp_path / "data"), image_size=64,
                                 frames=SplitFrames(train=256, val=128, test=64), shard_size=64, seed=1),
                   progress=False)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(f"name: ddp\noutput_dir: {tmp_path / 'runs'}\ndata: {{dir: {data}, batch_size: 16}}\n"
                   "model: {arch: vlmr-tiny}\nlora: {r: 4}\nlogger: csv\n"
                   "trainer: {max_steps: 6, checkpoint_every_n_steps: 3, accelerator: cpu, devices: 2, strategy: ddp,"
                   " progress_bar: false}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "vlmr.finetune.train", str(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert summary["val"]["val/auroc_mean"] is not None
    assert (run / "reward_model" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow  # builds a model in two fresh subprocesses
def test_bench_lora_reports_fraction_speed_and_memory():
    from vlmr.bench.lora import bench_lora, format_results

    results = bench_lora(["vlmr-tiny"], batch_size=4, steps=1)
    r = results["vlmr-tiny"]
    assert 0 < r["trainable_fraction"] <= 0.02
    assert r["full"]["trainable_params"] == r["full"]["base_params"]
    assert r["lora"]["peak_memory_mb"] > 0 and r["full"]["images_per_s"] > 0
    assert "vlmr-tiny" in format_results(results)
