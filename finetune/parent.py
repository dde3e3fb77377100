"""Starting a fine-tuning run from a parent reward model's LoRA adapter (`init_adapter`).

    vlmr finetune configs/finetune/babyai_lora.yaml name=babyai_refined init_adapter=runs/babyai/reward_model
    vlmr finetune configs/finetune/babyai_lora.yaml name=babyai_refined init_adapter=runs/babyai/reward_model \
        data.mix_dir=data/babyai_rollouts data.mix_ratio=0.3

    parent = read_parent("runs/babyai/reward_model", model_cfg, lora_cfg, base_sha256)  # one-line errors
    parent.lora      # the LoRA section the run trains with: the adapter's rank, alpha, dropout and targets
    parent.record    # run.json / summary.json "parent_adapter": path, model_id, adapter_sha256, lora_from_adapter

It is a new run, not a resume: step 0, a fresh optimiser, its own checkpoints (a resume resumes this run).
ClipFinetuneModule loads the adapter with peft's PeftModel.from_pretrained(clip, dir, is_trainable=True).
The parent must fit the run: it has a LoRA adapter, its base model (architecture and weights by sha256, or
pretrained tag) is the run's, and the run trains LoRA. Where the run's `lora` section disagrees with the
adapter (rank, alpha, dropout, targets), the adapter's is taken and the change printed: the adapter's
shapes and scale are what "starting from the parent" means. Without model.init_temperature the run starts
from the parent's temperature. The goal set may differ from the parent's: LoRA weights do not depend on it.

Tests: `.venv/bin/python -m pytest tests/test_finetune_mixing.py -q`
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from vlmr.finetune.lora import LoraSection, lora_target_regex
from vlmr.finetune.reward_model import ADAPTER_FILE, SPEC_FILE, WEIGHTS_FILE, read_spec, reward_model_id

from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json, sha256_file

ADAPTER_CONFIG = "adapter_config.json"
FLAGS = ("vision_attention", "vision_mlp", "text_attention", "text_mlp")


@dataclasses.dataclass
class Parent:
    path: str  # absolute path of the parent's reward-model directory
    model_id: str  # the parent reward model's identity hash (vlmr.finetune.reward_model.identity_hash)
    adapter_sha256: str  # sha256 of its adapter_model.safetensors
    temperature: float  # its reward temperature (reward_model.json)
    lora: LoraSection  # the LoRA section of the adapter
    lora_from_adapter: dict  # {key: [the run's config, the adapter's]} where they differed

    @property
    def record(self) -> dict:
        return {"path": self.path, "model_id": self.model_id, "adapter_sha256": self.adapter_sha256,
                "lora_from_adapter": self.lora_from_adapter}


def start_from_parent(cfg, model_cfg):
    """(cfg, model_cfg, parent) for a run with init_adapter: the config's lora replaced by the adapter's (said in
    one line when they differ), the start temperature the parent's unless model.init_temperature is set.
    model_cfg is the model section with the base prepared (train.prepare_base)."""
    base = model_cfg.pretrained
    base_sha = sha256_file(base) if base and Path(base).is_file() else None
    parent = read_parent(cfg.init_adapter, model_cfg, cfg.lora, base_sha)
    if parent.lora_from_adapter:
        print(f"finetune {cfg.name}: lora taken from the parent adapter {cfg.init_adapter}: "
              + "; ".join(f"{k} {a} -> {b}" for k, (a, b) in parent.lora_from_adapter.items()))
    if model_cfg.init_temperature is None:
        model_cfg = dataclasses.replace(model_cfg, init_temperature=parent.temperature)
    return dataclasses.replace(cfg, lora=parent.lora), model_cfg, parent


def _describe_base(arch: str, pretrained: str | None, sha: str | None) -> str:
    if sha:
        return f"{arch} with weights {pretrained} (sha256 {sha[:12]}..)"
    return f"{arch} with {f'pretrained {pretrained!r}' if pretrained else 'random-init weights'}"


def _target_flags(target, lora: LoraSection, freeze_text: bool) -> dict | None:
    """The LoraSection flags whose target regex is the adapter's (the run's own flags first), or None."""
    own = tuple(getattr(lora, k) for k in FLAGS)
    for combo in (own, *itertools.product((True, False), repeat=len(FLAGS))):
        flags = dict(zip(FLAGS, combo))
        try:
            if lora_target_regex(dataclasses.replace(lora, **flags), freeze_text) == target:
                return flags
        except VlmrError:  # no target selected
            continue
    return None


def read_parent(path: str, model_cfg, lora: LoraSection | None, base_sha256: str | None) -> Parent:
    """Check that the reward-model directory `path` can start this run (model_cfg with the base prepared, its
    weights' sha256 when a file) and return what the run takes from it."""
    where = f"init_adapter={path}"
    if lora is None:
        raise VlmrError(f"{where} starts from a LoRA adapter, but lora is null (full fine-tuning); set a lora "
                        "section, or drop init_adapter")
    folder = Path(path)
    if not (folder / SPEC_FILE).is_file():
        raise VlmrError(f"{where}: no {SPEC_FILE} there; give a reward-model directory as `vlmr finetune` writes "
                        "it (runs/<name>/reward_model)")
    spec = read_spec(folder)
    if not (folder / ADAPTER_FILE).is_file() or not (folder / ADAPTER_CONFIG).is_file():
        what = "full weights (lora: null)" if (folder / WEIGHTS_FILE).is_file() else "no adapter (a zero-shot export)"
        raise VlmrError(f"{where}: that reward model has {what}, so there is no LoRA adapter to start from; give the "
                        "reward_model/ of a LoRA run trained for at least one step")
    ours = (model_cfg.arch, base_sha256 or model_cfg.pretrained)
    theirs = (spec.arch, spec.pretrained_sha256 or spec.pretrained)
    if ours != theirs:
        parent_base = str((folder / spec.pretrained).resolve()) if spec.pretrained_sha256 else spec.pretrained
        raise VlmrError(f"{where}: its adapter was trained on {_describe_base(spec.arch, parent_base, spec.pretrained_sha256)}"
                        f", but this run's base is {_describe_base(model_cfg.arch, model_cfg.pretrained, base_sha256)}; "
                        f"set model.arch={spec.arch} model.pretrained={parent_base}")
    adapter = read_json(folder / ADAPTER_CONFIG, "peft adapter config")
    target = adapter.get("target_modules")
    flags = _target_flags(target, lora, model_cfg.freeze_text)
    if flags is None:
        hint = ("set model.freeze_text=false (the adapter adapts the text tower)"
                if model_cfg.freeze_text and _target_flags(target, lora, False) else
                "it was not made by vlmr finetune; start from a vlmr LoRA run")
        raise VlmrError(f"{where}: its LoRA targets {str(target)[:120]!r} are none of vlmr's target sets for "
                        f"model.freeze_text={model_cfg.freeze_text}; {hint}")
    try:
        theirs_lora = LoraSection(r=int(adapter["r"]), alpha=float(adapter["lora_alpha"]),
                                  dropout=float(adapter.get("lora_dropout", 0.0)), **flags)
    except (KeyError, TypeError, ValueError) as e:
        raise VlmrError(f"{where}: {folder / ADAPTER_CONFIG} has no usable r/lora_alpha/lora_dropout ({e}); "
                        "restore it or export the parent again") from None
    changed = {k: [getattr(lora, k), getattr(theirs_lora, k)] for k in dataclasses.asdict(theirs_lora)
               if getattr(lora, k) != getattr(theirs_lora, k)}
    return Parent(path=str(folder.resolve()), model_id=reward_model_id(folder),
                  adapter_sha256=sha256_file(folder / ADAPTER_FILE), temperature=float(spec.temperature),
                  lora=theirs_lora, lora_from_adapter=changed)
