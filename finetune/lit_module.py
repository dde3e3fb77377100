"""The LightningModule that adapts an open_clip model (peft LoRA, or full training) into a reward model.

    module = ClipFinetuneModule(goals, model={"arch": "vlmr-tiny"}, lora={"r": 8}, loss={}, optim={}, max_steps=100)
    trainer.fit(module, datamodule)           # vlmr.finetune.train does this from a YAML config
    rm = to_reward_model(module)              # vlmr.finetune.export; rm.save(dir)

Thin on purpose: one shared step serves train and val. The losses (vlmr.finetune.losses)
are weighted by the `loss` section: multi-positive CLIP contrastive, BCE of P(g|o)
(exactly what the reward uses), SigLIP-style sigmoid. LoRA setup is vlmr.finetune.lora,
the validation scores vlmr.finetune.validation, the export vlmr.finetune.export.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from vlmr.finetune.augment import AugmentSection, FrameAugment
from vlmr.finetune.goal_rules import GoalTemplate
from vlmr.finetune.lora import TEXT_PREFIXES, LoraSection, apply_lora, freeze_text_tower
from vlmr.finetune.losses import (
    MIN_TEMPERATURE,
    GoalClassificationLoss,
    MultiPositiveClipLoss,
    SigmoidLoss,
    positives_mask,
)
from vlmr.finetune.models import create_clip, image_preprocess_cfg, patch_size
from vlmr.finetune.preprocess import preprocess_frames
from vlmr.finetune.resume import REFUSE, apply_optim, policy
from vlmr.finetune.reward_math import all_goal_log_probs, normalize
from vlmr.finetune.reward_model import candidate_prompts, encode_candidates, make_spec
from vlmr.finetune.validation import SUMMARY_KEYS, GoalScores, sample_rows

from vlmr.core.config import PositiveFloat, build_config, config_dataclass
from vlmr.core.errors import VlmrError
from vlmr.core.files import sha256_file


@config_dataclass
class ModelSection:
    arch: str = "vlmr-tiny"  # open_clip architecture (vlmr-tiny, vlmr-small, ViT-B-32, ...)
    pretrained: str | None = None  # open_clip tag or checkpoint file; null = random init (a control arm)
    goals: list[str] | None = None  # the model's goal set; null = the dataset's; must equal the dataset's
    templates: list[str] = dataclasses.field(default_factory=lambda: ["{goal}"])  # prompt templates, ensembled
    goal_prompts: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # per-goal prompts
    # the rule that made goal_prompts (reward_model.json goal_templates): prompts for goals added at load
    goal_templates: dict[str, GoalTemplate] = dataclasses.field(default_factory=dict)
    negatives: list[str] = dataclasses.field(default_factory=list)  # extra candidates that are never goals
    init_temperature: float | None = None  # tau of P(g|o) at the start; null = 1 / exp(the base's logit_scale), or
    # with init_adapter the parent's temperature
    freeze_text: bool = False  # keep the text tower fixed (overrides lora.text_*)
    grad_checkpointing: bool = False  # recompute block activations in backward: less memory, ~30% slower


@config_dataclass
class LossSection:
    contrastive: float = 1.0  # weight of the multi-positive CLIP contrastive loss
    goal: float = 1.0  # weight of the BCE of P(g|o) against the goal labels
    sigmoid: float = 0.0  # weight of the SigLIP-style sigmoid loss
    learn_temperature: bool = True  # learn the shared tau of P(g|o) (else fixed at init_temperature)
    pos_weight: float = 1.0  # weight of positive labels in the goal BCE (positives are rare)

    def __post_init__(self):
        if min(self.contrastive, self.goal, self.sigmoid) < 0 or self.contrastive + self.goal + self.sigmoid == 0:
            raise ValueError("loss weights must be >= 0 and not all zero")


@config_dataclass
class OptimSection:
    lr: PositiveFloat = 1e-3  # peak AdamW learning rate (0 would train a model that cannot change)
    weight_decay: float = 0.01  # AdamW weight decay on matrices (not on biases, norms, scales)
    warmup_steps: int = 20  # linear warm-up, then cosine decay to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.1  # final learning rate as a fraction of lr
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas (CLIP's)


class ClipFinetuneModule(pl.LightningModule):
    def __init__(self, goals: list[str], model: dict, lora: dict | None, loss: dict, optim: dict,
                 max_steps: int, sample_frames: int = 16, augment: dict | None = None, init_adapter: str | None = None):
        """goals: the dataset's goal set; model, lora (None = full training), loss, optim: the config sections
        as dicts, saved as hyperparameters so a checkpoint knows its settings; max_steps: the schedule's length;
        sample_frames: val frames in the W&B sample table (0 = none); augment: the training frames' augmentations
        (None = off); init_adapter: a reward-model dir whose LoRA adapter the weights start from (checked by
        vlmr.finetune.parent.read_parent; lora must then be the adapter's)."""
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg = build_config(ModelSection, dict(model), "model section")
        self.lora_cfg = build_config(LoraSection, dict(lora), "lora section") if lora is not None else None
        self.loss_cfg = build_config(LossSection, dict(loss), "loss section")
        self.optim_cfg = build_config(OptimSection, dict(optim), "optim section")
        mc = self.model_cfg
        pretrained = mc.pretrained
        self.base_sha256 = None
        if pretrained and Path(pretrained).is_file():
            pretrained = str(Path(pretrained).resolve())
            self.base_sha256 = sha256_file(pretrained)
        clip, self.tokenizer = create_clip(mc.arch, pretrained)
        self.spec = make_spec(arch=mc.arch, goals=list(goals), pretrained=pretrained, pretrained_sha256=self.base_sha256,
                              templates=mc.templates, goal_prompts=mc.goal_prompts, goal_templates=mc.goal_templates,
                              negatives=mc.negatives)
        self.pretrained_path = Path(pretrained) if self.base_sha256 else None
        self.pre = image_preprocess_cfg(clip)
        self.patch = patch_size(clip)
        self.augment = (FrameAugment(build_config(AugmentSection, dict(augment), "augment section"), self.pre["size"],
                                     self.pre["interpolation"]) if augment is not None else None)
        init_tau = mc.init_temperature or 1.0 / float(clip.logit_scale.detach().exp())
        if mc.grad_checkpointing:
            clip.set_grad_checkpointing(True)  # open_clip's non-reentrant checkpoint: LoRA grads still flow
        if self.lora_cfg is not None and init_adapter is not None:
            from peft import PeftModel

            clip = PeftModel.from_pretrained(clip, str(init_adapter), is_trainable=True)  # the parent's LoRA weights
        elif self.lora_cfg is not None:
            clip = apply_lora(clip, self.lora_cfg, mc.freeze_text, mc.arch)
        elif mc.freeze_text:
            freeze_text_tower(clip)
        self.clip = clip.train()  # create_clip returns eval mode; LoRA dropout needs train mode
        self.text_trainable = any(p.requires_grad for n, p in self.base_clip.named_parameters()
                                  if n.startswith(TEXT_PREFIXES))
        self.contrastive_loss = MultiPositiveClipLoss()
        # a parameter without gradients would break DDP (unused parameters), so tau is learned only when used
        learn_tau = self.loss_cfg.learn_temperature and self.loss_cfg.goal > 0
        self.goal_loss = GoalClassificationLoss(init_tau, learn_tau, self.loss_cfg.pos_weight)
        if self.loss_cfg.contrastive == 0:
            self.base_clip.logit_scale.requires_grad_(False)
        self.sigmoid_loss = SigmoidLoss() if self.loss_cfg.sigmoid > 0 else None
        self.val_scores = GoalScores()
        self._frozen_text_cache: torch.Tensor | None = None
        self._samples: tuple = ()  # (frames, probs, labels) of the first val batch, for the W&B sample table
        self.val_summary: dict = {}  # the headline val/ numbers of the last validation, None where undefined
        self.val_step_seen = -1  # global step of the last finished validation
        self.val_history: list[dict] = []  # {"step", headline val/ numbers, "val/loss"} of every validation
        self.start_step = 0  # global step at which this fit started (> 0 when resumed)
        self.run_record: dict = {}  # settings and resume history saved with checkpoints (vlmr.finetune.resume)

    # ------------------------------------------------------------ model pieces
    @property
    def base_clip(self):
        """The open_clip model under the peft wrapper (shares its weights)."""
        return self.clip.get_base_model() if self.lora_cfg is not None else self.clip

    def reward_temperature(self) -> torch.Tensor:
        """tau of P(g|o): the goal loss's when it trains one, else the CLIP's own 1 / exp(logit_scale)."""
        if self.loss_cfg.goal > 0 or self.model_cfg.init_temperature:
            return self.goal_loss.temperature
        return (-self.base_clip.logit_scale.float()).exp().clamp(min=MIN_TEMPERATURE)

    @property
    def goals(self) -> list[str]:
        return self.spec.goals

    def embed_images(self, frames) -> torch.Tensor:
        x = preprocess_frames(frames, self.pre["size"], self.pre["mean"], self.pre["std"], self.pre["interpolation"],
                              self.device, self.patch)
        return normalize(self.base_clip.encode_image(x).float())

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        unique = list(dict.fromkeys(texts))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.text_trainable):
            emb = normalize(self.base_clip.encode_text(self.tokenizer(unique).to(self.device)).float())
        index = {t: i for i, t in enumerate(unique)}
        return emb[torch.tensor([index[t] for t in texts], device=self.device)]

    def candidate_embeddings(self) -> torch.Tensor:
        """(C, D) prompt-ensembled goal + negative embeddings; cached while the text tower cannot change."""
        if not self.text_trainable and self._frozen_text_cache is not None:
            return self._frozen_text_cache.to(self.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.text_trainable):
            emb = encode_candidates(self.base_clip, self.tokenizer, candidate_prompts(self.spec), self.device)
        if not self.text_trainable:
            self._frozen_text_cache = emb.detach()
        return emb

    # ------------------------------------------------------------ the shared step
    def compute_losses(self, batch: dict, need_candidates: bool = True):
        """The weighted loss of a batch, its parts, and the embeddings it used."""
        labels = batch["labels"].to(self.device).float()
        if labels.shape[1] != len(self.goals):
            raise VlmrError(f"batch has labels for {labels.shape[1]} goals but the model has {len(self.goals)} goals")
        image = self.embed_images(batch["frames"])
        w, parts = self.loss_cfg, {}
        if w.contrastive > 0 or w.sigmoid > 0:
            text = self.embed_texts(list(batch["captions"]))
            pos = positives_mask(list(batch["captions"]), labels)
            if w.contrastive > 0:
                parts["contrastive"] = self.contrastive_loss(image, text, self.base_clip.logit_scale, pos)
            if w.sigmoid > 0:
                parts["sigmoid"] = self.sigmoid_loss(image, text, pos)
        candidates = self.candidate_embeddings() if need_candidates or w.goal > 0 else None
        if w.goal > 0:
            parts["goal"] = self.goal_loss(image, candidates, labels)
        total = sum(getattr(w, k) * v for k, v in parts.items())
        return total, parts, image, candidates, labels

    def shared_step(self, batch: dict, stage: str):
        total, parts, image, candidates, labels = self.compute_losses(batch, need_candidates=stage != "train")
        bs, sync = labels.shape[0], stage != "train"
        self.log(f"{stage}/loss", total, prog_bar=True, batch_size=bs, sync_dist=sync)
        for k, v in parts.items():
            self.log(f"{stage}/loss_{k}", v, batch_size=bs, sync_dist=sync)
        return total, image, candidates, labels

    def on_train_start(self):
        self.start_step = self.global_step

    def training_step(self, batch, batch_idx):
        if self.augment is not None:  # training frames only: validation must measure the frames as they are
            batch = {**batch, "frames": self.augment(batch["frames"])}
        total, *_ = self.shared_step(batch, "train")
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(total)), all=True)
        if not finite:
            raise NonFiniteLossError(f"the training loss became {float(total.detach())} at step {self.global_step}")
        self.log("train/temperature", self.reward_temperature().detach(), batch_size=len(batch["labels"]))
        return total

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad.detach().float().norm() for p in self.parameters() if p.grad is not None]
        norm = torch.stack(grads).norm() if grads else torch.zeros((), device=self.device)
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(norm)), all=True)
        if not finite:  # stop before the optimizer writes NaNs into weights a checkpoint would keep
            raise NonFiniteLossError(f"the gradient norm became {float(norm)} at step {self.global_step}")
        self.log("train/grad_norm", norm)

    def validation_step(self, batch, batch_idx):
        _, image, candidates, labels = self.shared_step(batch, "val")
        tau = self.reward_temperature().detach().expand(len(self.goals))
        probs = all_goal_log_probs(image @ candidates.T, tau).exp()
        self.val_scores.update(probs, labels, batch["own_goal"].to(self.device))
        if batch_idx == 0 and self.hparams.sample_frames:
            n = self.hparams.sample_frames
            self._samples = (batch["frames"][:n], probs[:n].cpu(), labels[:n].cpu())

    def on_validation_epoch_end(self):
        scores = self.val_scores.compute()
        self.val_scores.reset()
        if not scores:
            return
        self.val_summary = {f"val/{k}": scores[k] for k in SUMMARY_KEYS}
        metrics = dict(self.val_summary)
        for kind in ("auroc", "ap"):
            metrics.update({f"val/{kind}/{self.goals[g]}": v for g, v in scores[kind].items()})
        # Lightning logs numbers only: an undefined metric (None, e.g. own-goal AUROC without missions) is left
        # out of the logged keys; summary.json keeps it as null through val_summary. torchmetrics already
        # gathered every rank's predictions, so the values agree on all ranks.
        self.log_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in metrics.items() if v is not None})
        self.log_sample_table()
        if self.trainer is not None and self.trainer.state.fn == "fit":  # the learning curve, not re-validations
            # the loss and each of its terms: early stopping may watch any of them (val/loss_contrastive)
            losses = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/loss")}
            self.val_history.append({"step": self.global_step, **self.val_summary, "val/loss": None, **losses})
        self.val_step_seen = self.global_step

    def log_sample_table(self):
        from pytorch_lightning.loggers import WandbLogger

        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers or not self._samples or self.global_rank != 0:
            return
        import wandb

        rows = [[wandb.Image(frame), top, truth] for frame, top, truth in sample_rows(*self._samples, self.goals)]
        loggers[0].log_table("val/samples", columns=["frame", "top goals P(g|o)", "true goals"], data=rows,
                             step=self.global_step)

    # ------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        oc = self.optim_cfg
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": oc.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=oc.lr, betas=tuple(oc.betas))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_factor(step))  # read at each step
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """The learning rate at `step` as a fraction of optim.lr: linear warm-up, then cosine to min_lr_ratio."""
        oc = self.optim_cfg
        total, warm = max(1, self.hparams.max_steps), max(0, oc.warmup_steps)
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return oc.min_lr_ratio + (1 - oc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    # ------------------------------------------------------------ checkpoints
    def _frozen_keys(self) -> set[str]:
        return {n for n, p in self.named_parameters() if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["vlmr"] = {"goals": self.goals, "base_sha256": self.base_sha256, "val_history": self.val_history,
                              **self.run_record}
        if self.lora_cfg is not None:  # the frozen base is in its own file (sha-checked): keep checkpoints small
            frozen = self._frozen_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def on_load_checkpoint(self, checkpoint):
        saved = checkpoint.get("vlmr", {})
        self.val_history = list(saved.get("val_history", []))  # a resumed run's curve keeps its earlier points
        if saved.get("goals") is not None and saved["goals"] != self.goals:
            raise VlmrError(f"the checkpoint was trained for a different goal set ({len(saved['goals'])} goals, e.g. "
                            f"{saved['goals'][:3]}) than this run's data ({len(self.goals)} goals, e.g. "
                            f"{self.goals[:3]}); start a new run (another name, or resume=false)")
        if saved.get("base_sha256") != self.base_sha256:
            raise VlmrError("the checkpoint was trained on a different base model (sha256 differs from "
                            f"{self.model_cfg.pretrained}); start a new run (another name, or resume=false)")
        hp = checkpoint.get("hyper_parameters", {})
        for key in ("model", "lora"):
            # only what resume.POLICY refuses: the base file may have moved with its run folder (its sha256 was
            # compared above), the goal set was compared itself, grad_checkpointing gives the same numbers
            ours = {k: v for k, v in (self.hparams[key] or {}).items() if policy(f"{key}.{k}") == REFUSE}
            theirs = {k: v for k, v in (hp.get(key) or {}).items() if policy(f"{key}.{k}") == REFUSE}
            if key in hp and ours != theirs:
                diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
                raise VlmrError(f"the checkpoint's {key!r} settings differ from this config in {diff or key}; "
                                "start a new run (another name, or resume=false)")
        if self.lora_cfg is not None:
            state = self.state_dict()
            frozen = self._frozen_keys()
            checkpoint["state_dict"] = {**{k: v for k, v in state.items() if k in frozen}, **checkpoint["state_dict"]}
        apply_optim(checkpoint, self.optim_cfg, self.lr_factor)  # a changed optim section applies from here on


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; train.py turns it into a VlmrError naming the last checkpoint."""
