"""The trained LightningModule as a RewardModel (what `vlmr finetune` saves to runs/<name>/reward_model/).

    rm = to_reward_model(module)                       # shares weights with the module; tau is the trained one
    rm = to_reward_model(module, with_adapter=False)   # a zero-shot export: no LoRA layers, no adapter files
    rm.save(run_dir / "reward_model")
"""

from __future__ import annotations

import dataclasses

import torch
from vlmr.finetune.models import create_clip
from vlmr.finetune.reward_model import RewardModel


@torch.no_grad()
def restore_base_weights(module) -> None:
    """Reset the frozen base of a LoRA module to its checkpoint file exactly.

    peft adapts nn.MultiheadAttention by adding the LoRA delta to the frozen weight before each forward and
    subtracting it after, so float rounding lets the base drift by ~1e-6 over a run. The adapter is saved
    against the checkpoint file, so the module is made equal to what a later load will see.
    """
    if module.lora_cfg is None or not module.model_cfg.pretrained:
        return
    fresh, _ = create_clip(module.model_cfg.arch, str(module.pretrained_path or module.model_cfg.pretrained))
    state = fresh.state_dict()
    for name, p in module.base_clip.named_parameters():
        key = name.replace(".base_layer", "")
        if not p.requires_grad and key in state:
            p.copy_(state[key])


def to_reward_model(module, with_adapter: bool = True) -> RewardModel:
    """A ClipFinetuneModule as a RewardModel in eval mode, with the module's trained temperature.

    with_adapter=False (a zero-shot export of an untrained LoRA run) removes the LoRA layers, so the saved
    directory has no adapter files, as docs/DESIGN.md defines a zero-shot reward model.
    """
    restore_base_weights(module)
    clip = module.clip
    if module.lora_cfg is not None and not with_adapter:
        clip = module.clip.unload()
    spec = dataclasses.replace(module.spec, temperature=float(module.reward_temperature().detach()))
    return RewardModel(clip, module.tokenizer, spec, module.pretrained_path, device=module.device).eval()
