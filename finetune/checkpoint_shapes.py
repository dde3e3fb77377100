"""Which architecture a CLIP checkpoint was made for, from its tensor shapes alone.

    checkpoint_mismatch("runs/base/open_clip_model.safetensors", "vlmr-small", error)
    # "checkpoint ... does not fit architecture vlmr-small: vision width 128 in the checkpoint, 256 in
    #  vlmr-small; ...; its shapes match architecture vlmr-tiny: use that one, or a checkpoint made for vlmr-small"

open_clip reports a checkpoint that does not fit its architecture with whatever fails first deep in its
loading code ("AssertionError: text pos_embed width changed!"). Here both sides are reduced to a shape
signature (widths, depths, patch and image size, context length, vocabulary), read from the checkpoint's
tensor shapes and from the architectures' JSON configs, so the error can say what differs and which known
architecture (configs/models/ or open_clip's own list) the checkpoint does fit. Only the plain CLIP layout
(open_clip's ViT towers) has a signature; other towers fall back to open_clip's own message.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

LABELS = {"embed_dim": "embedding size", "vision_width": "vision width", "vision_layers": "vision layers",
          "patch_size": "patch size", "image_size": "image size", "vision_mlp": "vision MLP width",
          "text_width": "text width", "text_layers": "text layers", "context_length": "context length",
          "vocab_size": "vocabulary size", "text_mlp": "text MLP width"}
RESIZABLE = ("image_size", "context_length")  # open_clip interpolates these position embeddings on load


def _shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape; a safetensors file is read from its header only."""
    if str(path).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    from open_clip.factory import load_state_dict

    return {k: tuple(v.shape) for k, v in load_state_dict(str(path)).items() if hasattr(v, "shape")}


def _layers(shapes: dict, prefix: str) -> int | None:
    found = {int(m.group(1)) for k in shapes if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else None


def checkpoint_signature(path: str | Path) -> dict:
    """The shape signature of a checkpoint file; keys it cannot tell are left out."""
    shapes = _shapes(path)
    sig: dict = {}
    if (conv := shapes.get("visual.conv1.weight")) and len(conv) == 4:
        sig.update(vision_width=conv[0], patch_size=conv[2], vision_layers=_layers(shapes, "visual.transformer.resblocks."))
        if pos := shapes.get("visual.positional_embedding"):
            grid = math.isqrt(pos[0] - 1) if math.isqrt(pos[0] - 1) ** 2 == pos[0] - 1 else math.isqrt(pos[0])
            sig["image_size"] = grid * conv[2]
        if mlp := shapes.get("visual.transformer.resblocks.0.mlp.c_fc.weight"):
            sig["vision_mlp"] = mlp[0]
        if proj := shapes.get("visual.proj"):
            sig["embed_dim"] = proj[1]
    text = "text." if "text.token_embedding.weight" in shapes else ""  # CustomTextCLIP keeps the tower under text.
    if tok := shapes.get(f"{text}token_embedding.weight"):
        sig.update(vocab_size=tok[0], text_width=tok[1], text_layers=_layers(shapes, f"{text}transformer.resblocks."))
        if pos := shapes.get(f"{text}positional_embedding"):
            sig["context_length"] = pos[0]
        if mlp := shapes.get(f"{text}transformer.resblocks.0.mlp.c_fc.weight"):
            sig["text_mlp"] = mlp[0]
        if (proj := shapes.get(f"{text}text_projection")) and len(proj) == 2:
            sig["embed_dim"] = proj[1]
    return {k: v for k, v in sig.items() if v is not None}


def architecture_signature(arch: str) -> dict:
    """The shape signature of an open_clip architecture from its JSON config; {} for other tower types."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    cfg = open_clip.get_model_config(arch) or {}
    sig: dict = {"embed_dim": cfg.get("embed_dim")}
    try:
        vision = CLIPVisionCfg(**cfg.get("vision_cfg", {}))
        if not vision.timm_model_name and isinstance(vision.layers, int):
            sig.update(vision_width=vision.width, vision_layers=vision.layers, patch_size=vision.patch_size,
                       image_size=vision.image_size, vision_mlp=int(vision.width * vision.mlp_ratio))
        text = CLIPTextCfg(**cfg.get("text_cfg", {}))
        if not text.hf_model_name:
            sig.update(text_width=text.width, text_layers=text.layers, context_length=text.context_length,
                       vocab_size=text.vocab_size, text_mlp=int(text.width * text.mlp_ratio))
    except TypeError:  # a config with keys this open_clip's dataclasses do not know: no signature
        return {}
    return {k: v for k, v in sig.items() if isinstance(v, int)} if len(sig) > 1 else {}


def _differences(found: dict, expected: dict, skip=()) -> list[str]:
    return [k for k in LABELS if k in found and k in expected and k not in skip and found[k] != expected[k]]


def matching_architectures(found: dict, limit: int = 3) -> list[str]:
    """Known architectures whose shapes the signature fits: exactly, else up to the resizable position
    embeddings; vlmr's own architectures first."""
    import open_clip
    from vlmr.finetune.models import register_model_configs

    ours = register_model_configs()
    names = [*ours, *(n for n in open_clip.list_models() if n not in ours)]
    signatures = {n: architecture_signature(n) for n in names}
    usable = {n: s for n, s in signatures.items() if len(set(s) & set(found)) >= 4}
    for skip in ((), RESIZABLE):
        hits = [n for n, s in usable.items() if not _differences(found, s, skip)]
        if hits:
            return hits[:limit]
    return []


def checkpoint_mismatch(path: str | Path, arch: str, error: Exception) -> str:
    """A one-line message for a checkpoint that open_clip could not load into `arch`."""
    try:
        found = checkpoint_signature(path)
    except Exception:  # noqa: BLE001 - an unreadable file: open_clip's own error says more
        found = {}
    expected = architecture_signature(arch)
    diffs = _differences(found, expected)
    if not found or (expected and not diffs):  # not a ViT CLIP, or no shape we can name: open_clip's words
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        return f"could not load checkpoint {path} into architecture {arch}: {detail}"
    what = "; ".join(f"{LABELS[k]} {found[k]} in the checkpoint, {expected[k]} in {arch}" for k in diffs[:3])
    matches = [m for m in matching_architectures(found) if m != arch]
    hint = (f"its shapes match architecture {' / '.join(matches)}: use that one, or a checkpoint made for {arch}"
            if matches else "no known architecture has its shapes (`vlmr models --all` lists them); give a "
            f"checkpoint made for {arch}")
    return f"checkpoint {path} does not fit architecture {arch}: {what or 'its tensors differ'}; {hint}"
