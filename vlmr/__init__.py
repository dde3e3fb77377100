"""vlmr: CLIP-family vision-language models as calibrated reward models for reinforcement learning.

    from vlmr import RewardModel
    rm = RewardModel.create("vlmr-tiny", ["go to the red ball", "go to the blue key"])   # zero-shot
    rm = RewardModel.load("runs/babyai_demo/adapted/reward_model")                        # adapted + calibrated
    rewards = rm.reward(frames, goal_ids)                  # frames: uint8 N x H x W x 3

    from vlmr import VLMReward                             # batched reward for gymnasium vector envs
    from vlmr import load_config, FinetuneConfig, run_finetune
    run_finetune(load_config(FinetuneConfig, "babyai_lora", ["trainer.max_steps=50"]))

One function per stage, each taking its typed config: run_collect, run_finetune, run_calibrate, run_evaluate,
train_ppo, run_compare, run_refine, run_pipeline, run_scaling. Names are imported on first use, so `import vlmr` (and the
CLI's --help) stays fast and needs no torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> module:attribute
_EXPORTS = {
    "VlmrError": "vlmr.core.errors:VlmrError",
    "load_config": "vlmr.core.config:load_config",
    "RewardModel": "vlmr.finetune.reward_model:RewardModel",
    "VLMReward": "vlmr.rl.agent.reward_wrapper:VLMReward",
    "CollectConfig": "vlmr.rl.collect.collect:CollectConfig",
    "run_collect": "vlmr.rl.collect.collect:collect",
    "FinetuneConfig": "vlmr.finetune.train:FinetuneConfig",
    "run_finetune": "vlmr.finetune.train:finetune",
    "CalibrateConfig": "vlmr.calibrate.fit:CalibrateConfig",
    "run_calibrate": "vlmr.calibrate.fit:calibrate",
    "EvaluateConfig": "vlmr.calibrate.evaluate:EvaluateConfig",
    "run_evaluate": "vlmr.rl.collect.rerender:evaluate",  # also draws frames for render_size
    "PPOConfig": "vlmr.rl.agent.ppo:PPOConfig",
    "train_ppo": "vlmr.rl.agent.ppo:train",
    "CompareConfig": "vlmr.rl.experiments.compare:CompareConfig",
    "run_compare": "vlmr.rl.experiments.compare:compare",
    "PipelineConfig": "vlmr.rl.experiments.pipeline:PipelineConfig",
    "run_pipeline": "vlmr.rl.experiments.pipeline:pipeline",
    "RefineConfig": "vlmr.rl.experiments.refine:RefineConfig",
    "run_refine": "vlmr.rl.experiments.refine:refine",
    "ScalingConfig": "vlmr.rl.experiments.scaling:ScalingConfig",
    "run_scaling": "vlmr.rl.experiments.scaling:scaling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vlmr' has no attribute {name!r}")
    module, attr = _EXPORTS[name].split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
