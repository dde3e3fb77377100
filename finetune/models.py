"""The model factory: every CLIP that vlmr uses is created here.

    model, tokenizer = create_clip("vlmr-tiny")                       # tiny JSON config, random init
    model, tokenizer = create_clip("ViT-B-32", pretrained="openai")   # open_clip tag (needs network once)
    model, tokenizer = create_clip("ViT-B-32", pretrained="/ckpt/clip.safetensors")  # local checkpoint
    model, tokenizer = create_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")

Small architectures live as open_clip JSON configs in `configs/models/` and are
registered with `open_clip.add_model_config` on import.
"""

from __future__ import annotations

import difflib
import logging
import os
import pickle
from functools import cache
from pathlib import Path

import open_clip
import torch
from safetensors import SafetensorError

from vlmr.core.config import shipped_config_dir
from vlmr.core.errors import VlmrError


@cache
def register_model_configs() -> tuple[str, ...]:
    """Register vlmr's architectures (shipped configs/models/*.json, or $VLMR_MODEL_CONFIGS) with open_clip."""
    config_dir = Path(os.environ.get("VLMR_MODEL_CONFIGS") or shipped_config_dir() / "models")
    if not config_dir.is_dir():
        raise VlmrError(f"model config folder {config_dir} not found; point VLMR_MODEL_CONFIGS at a folder of "
                        "open_clip model JSON files, or unset it to use the shipped ones")
    open_clip.add_model_config(config_dir)
    return tuple(sorted(p.stem for p in config_dir.glob("*.json")))


def check_architecture(arch: str) -> None:
    if arch.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if arch.replace("/", "-") not in known:
        close = difflib.get_close_matches(arch, known, n=4, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise VlmrError(f"unknown architecture {arch!r}.{hint} `vlmr models --all` lists every architecture.")


def tag_cached(arch: str, tag: str) -> bool:
    """Whether the weights of an open_clip pretrained tag are already on this machine."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        return False
    if cfg.get("file"):
        return Path(cfg["file"]).is_file()
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        # open_clip's convention: 'org/repo/' means the default file, 'org/repo/file.bin' names one.
        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
    if cfg.get("url"):
        return (Path.home() / ".cache" / "clip" / os.path.basename(cfg["url"])).is_file()
    return False


def offline_tags(arch: str) -> list[str]:
    return [t for t in open_clip.list_pretrained_tags_by_model(arch) if tag_cached(arch, t)]


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0", "false") for v in ("VLMR_OFFLINE", "HF_HUB_OFFLINE"))


def resolve_pretrained(arch: str, pretrained: str | None) -> tuple[str | None, str]:
    """Classify `pretrained` as (value, kind) with kind in none|file|tag|hub, with errors a user can act on."""
    if arch.startswith(("hf-hub:", "local-dir:")):
        return None, "hub"
    if not pretrained:
        return None, "none"
    if Path(pretrained).is_file():
        return str(pretrained), "file"
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained in tags:
        if not tag_cached(arch, pretrained) and _offline():
            cached = offline_tags(arch)
            raise VlmrError(
                f"pretrained tag {pretrained!r} for {arch} needs a download, and this machine is offline "
                f"(VLMR_OFFLINE/HF_HUB_OFFLINE). Tags cached here: {cached or 'none'}. Alternatives: a local "
                f"checkpoint path as `pretrained`, or the offline base CLIP that `vlmr pipeline` pretrains."
            )
        return pretrained, "tag"
    if any(sep in pretrained for sep in ("/", "\\", ".")):
        raise VlmrError(f"pretrained checkpoint {pretrained!r} not found (not a file). Give an existing path or a tag.")
    raise VlmrError(f"unknown pretrained tag {pretrained!r} for {arch}. Known tags: {tags or 'none'}.")


def create_clip(arch: str, pretrained: str | None = None, device: str | torch.device = "cpu"):
    """Create an open_clip model and its tokenizer. Returns (model, tokenizer), model in eval mode."""
    register_model_configs()
    check_architecture(arch)
    value, kind = resolve_pretrained(arch, pretrained)
    try:
        # open_clip logs a warning for every randomly initialised model; that is expected here.
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            model = open_clip.create_model(arch, pretrained=value, device=device)
        finally:
            logging.getLogger().setLevel(level)
        tokenizer = open_clip.get_tokenizer(arch)
    except (SafetensorError, pickle.UnpicklingError, EOFError) as e:
        if kind != "file":
            raise
        raise VlmrError(f"checkpoint {value} cannot be read ({type(e).__name__}: {str(e)[:120]}); it is corrupt, "
                        "truncated or no checkpoint: restore it or give another") from None
    except (RuntimeError, OSError, AssertionError, KeyError, ValueError) as e:
        if kind == "file":  # open_clip fails deep inside (shape asserts, size mismatches): say what differs
            from vlmr.finetune.checkpoint_shapes import checkpoint_mismatch

            raise VlmrError(checkpoint_mismatch(value, arch, e)) from None
        if kind in ("tag", "hub") and isinstance(e, (RuntimeError, OSError)):
            raise VlmrError(
                f"could not fetch weights for {arch} {value or ''} ({type(e).__name__}: {str(e)[:200]}). "
                f"Without a network use a local checkpoint path or the offline base model."
            ) from None
        raise
    model.eval()
    return model, tokenizer


def patch_size(model) -> int | None:
    """The vision tower's patch side in px, or None for towers without patches (ResNets)."""
    visual = getattr(model, "visual", None)
    size = getattr(visual, "patch_size", None)
    if size is None:  # timm towers keep it on the patch embedding
        size = getattr(getattr(getattr(visual, "trunk", None), "patch_embed", None), "patch_size", None)
    if size is None:
        return None
    return int(min(size)) if isinstance(size, (tuple, list)) else int(size)


def image_preprocess_cfg(model) -> dict:
    """open_clip's own preprocessing settings for this model (size, mean, std, interpolation, resize mode)."""
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg["size"]
    cfg["size"] = (size, size) if isinstance(size, int) else tuple(size)
    return cfg
