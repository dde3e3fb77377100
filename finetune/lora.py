"""LoRA (peft) on an open_clip model: which modules get adapters, and the wrapping itself.

    clip = apply_lora(clip, LoraSection(r=8), freeze_text=False, arch="vlmr-tiny")   # a peft PeftModel
    freeze_text_tower(clip)                                                          # full training, text fixed

Targets are one regex over open_clip's module names, matched in full by peft. peft >= 0.14
adapts `nn.MultiheadAttention` itself (its in_proj and out_proj); targeting `out_proj` alone
would be silently ignored, because MultiheadAttention never calls out_proj.forward.
"""

from __future__ import annotations

from vlmr.core.config import config_dataclass
from vlmr.core.errors import VlmrError

VISION_BLOCKS = r"visual\.transformer\.resblocks\.\d+"
TEXT_BLOCKS = r"transformer\.resblocks\.\d+"  # matched in full, so it never matches visual.transformer...
# LoRA weights live under their target's name, so the text tower's LoRA weights also start with one of these
TEXT_PREFIXES = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
                 "text.")


@config_dataclass
class LoraSection:
    r: int = 8  # LoRA rank
    alpha: float = 16.0  # LoRA scaling numerator (scale = alpha / r)
    dropout: float = 0.0  # dropout on the LoRA input of Linear targets (attention LoRA merges, so none there)
    vision_attention: bool = True  # adapt the vision tower's attention (in_proj + out_proj)
    vision_mlp: bool = True  # adapt the vision tower's MLPs (c_fc, c_proj)
    text_attention: bool = True  # adapt the text tower's attention
    text_mlp: bool = True  # adapt the text tower's MLPs

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("need r >= 1, alpha > 0 and 0 <= dropout < 1")


def lora_target_regex(cfg: LoraSection, freeze_text: bool) -> str:
    """A peft `target_modules` regex (matched in full against module names) for the chosen towers and parts."""
    parts = []
    for blocks, attn, mlp in ((VISION_BLOCKS, cfg.vision_attention, cfg.vision_mlp),
                              (TEXT_BLOCKS, cfg.text_attention and not freeze_text, cfg.text_mlp and not freeze_text)):
        names = (["attn"] if attn else []) + (["mlp\\.c_fc", "mlp\\.c_proj"] if mlp else [])
        if names:
            parts.append(f"{blocks}\\.({'|'.join(names)})")
    if not parts:
        raise VlmrError("lora: no target modules selected; enable at least one of vision_attention, vision_mlp, "
                        "text_attention, text_mlp (text ones need model.freeze_text: false)")
    return "|".join(f"({p})" for p in parts)


def apply_lora(clip, cfg: LoraSection, freeze_text: bool, arch: str):
    """peft's get_peft_model with vlmr's targets; the base weights are frozen, only the adapters train."""
    from peft import LoraConfig, get_peft_model

    target = lora_target_regex(cfg, freeze_text)
    lora_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target, bias="none")
    try:
        return get_peft_model(clip, lora_cfg)
    except ValueError as e:
        raise VlmrError(f"LoRA targets {target!r} match no module of {arch} ({str(e)[:200]}); vlmr's targets fit "
                        "open_clip ViT towers (visual.transformer.resblocks.N.attn / .mlp)") from None


def freeze_text_tower(clip) -> None:
    """Full training with a fixed text tower: every text parameter stops taking gradients."""
    for name, p in clip.named_parameters():
        if name.startswith(TEXT_PREFIXES):
            p.requires_grad_(False)
