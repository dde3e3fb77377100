"""Shared fixtures: small labelled datasets collected once per test session.

    shapes_dataset   64 px coloured-shapes corpus, goals "a {colour} {shape}" (36), ~1 s to build
    babyai_dataset   64 px egocentric BabyAI GoToLocal frames, goals "go to the {colour} {type}" (18)
    refine_compare   a finished `vlmr compare` run (arm `adapted`, 2 seeds, saved agents) on a tiny LoRA
                     reward model whose calibration fires on some GoToObj frames, ~5 s to build

The datasets are real `vlmr collect` outputs (shards + manifest.json), built into a
session temp folder; read them with vlmr.core.dataset or ShardDataModule.
"""

from __future__ import annotations

import pytest


def _collect(tmp_path_factory, name: str, **fields):
    from vlmr.rl.collect.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp(name) / name
    cfg = CollectConfig(name=name, out_dir=str(out), **fields)
    return collect(cfg, progress=False)


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    """Path of a small shapes dataset: train 384 / val 128 / test 128 frames, shards of 128, 64 px."""
    from vlmr.rl.collect.collect import SplitFrames

    return _collect(tmp_path_factory, "shapes", source="shapes", image_size=64,
                    frames=SplitFrames(train=384, val=128, test=128), shard_size=128, seed=0)


@pytest.fixture(scope="session")
def babyai_dataset(tmp_path_factory):
    """Path of a small egocentric BabyAI GoToLocal dataset: train 384 / val 128 / test 128 frames, 64 px."""
    from vlmr.rl.collect.collect import SplitFrames

    return _collect(tmp_path_factory, "babyai_goto", source="babyai", env_id="BabyAI-GoToLocal-v0",
                    view="egocentric", image_size=64, frames=SplitFrames(train=384, val=128, test=128),
                    shard_size=128, seed=0)


COMPARE_ENV = "BabyAI-GoToObj-v0"
COMPARE_RL = dict(env_id=COMPARE_ENV, total_timesteps=128, num_envs=4, num_steps=32, eval_episodes=4,
                  final_eval_episodes=4, actions=["left", "right", "forward"], progress=False, logger="none",
                  image_size=64, torch_threads=1)  # one thread: several on 2 busy cores run many times slower


def lora_reward_model(path, seed: int = 0):
    """A vlmr-tiny reward model with a LoRA adapter whose weights are not peft's init (B is noise, not 0),
    on a random base saved beside it: what an adapted arm looks like, without training one."""
    import torch
    from safetensors.torch import save_file
    from vlmr.finetune.lora import LoraSection, apply_lora
    from vlmr.finetune.models import create_clip
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.envs.babyai_goals import family_goals

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    clip, _ = create_clip("vlmr-tiny")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path / "base.safetensors"))
    rm = RewardModel.create("vlmr-tiny", family_goals("goto"), pretrained=str(path / "base.safetensors"))
    rm.clip = apply_lora(rm.clip, LoraSection(r=4, alpha=8), False, "vlmr-tiny")
    with torch.no_grad():
        for name, param in rm.clip.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return rm.save(path / "reward_model")


def fire_sometimes(rm_dir) -> str:
    """A calibration whose reward fires on about 40% of GoToObj frames (each goal's threshold at the 60th
    percentile of its P(g|o), temperature 10) next to the model."""
    import numpy as np
    from gymnasium.vector import AutoresetMode
    from vlmr.finetune.reward_model import RewardModel
    from vlmr.rl.agent.vector_envs import make_vector_env, missions

    from vlmr.core.calibration_file import write_calibration

    rm = RewardModel.load(rm_dir)
    envs = make_vector_env(COMPARE_ENV, 8, AutoresetMode.NEXT_STEP, 64)
    envs.reset(seed=list(range(10, 18)))
    rng, frames, goals = np.random.default_rng(0), [], []
    for _ in range(40):
        frames += list(envs.call("render"))
        goals += missions(envs)
        envs.step(rng.integers(0, 3, 8))
    rm.set_calibration(10.0, 0.5)
    probs = rm.probs(np.stack(frames), goals).numpy()
    entries = {g: {"temperature": 10.0, "threshold": float(np.percentile(probs[[x == g for x in goals]], 60))
                   if g in goals else 1.0} for g in rm.goals}
    return str(write_calibration(rm_dir / "calibration.json", rm.model_id, entries))


@pytest.fixture(scope="session")
def refine_compare(tmp_path_factory):
    """{"compare_dir", "reward_model", "calibration"} of a finished compare run whose arm `adapted` (seeds 0, 1)
    trained on lora_reward_model, calibrated by fire_sometimes; every run saved its agent."""
    from vlmr.rl.experiments.compare import CompareConfig, run_all

    root = tmp_path_factory.mktemp("refine")
    rm_dir = lora_reward_model(root / "adapted")
    calibration = fire_sometimes(rm_dir)
    cfg = CompareConfig(out_dir=str(root / "cmp"), ground_truth=False, num_seeds=2, rl=COMPARE_RL,
                        reward_models={"adapted": {"reward_model": str(rm_dir), "calibration": calibration}})
    run_all(cfg)
    return {"compare_dir": root / "cmp", "reward_model": rm_dir, "calibration": calibration}
