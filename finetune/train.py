"""`vlmr finetune CONFIG [key=value ...]`: adapt a CLIP reward model on frame-caption shards.

    vlmr finetune configs/finetune/base_shapes_full.yaml                 # the offline demo's base CLIP (full training)
    vlmr finetune configs/finetune/babyai_lora.yaml                      # LoRA on that base, BabyAI GoTo data
    vlmr finetune configs/finetune/babyai_lora.yaml trainer.max_steps=0  # zero-shot arm: export + validate only
    vlmr finetune configs/finetune/babyai_lora.yaml model.pretrained=null name=babyai_random  # random-init control
    vlmr finetune configs/finetune/babyai_lora.yaml logger=csv trainer.devices=2 trainer.strategy=ddp
    vlmr finetune configs/finetune/crafter_lora.yaml
    vlmr finetune configs/finetune/babyai_lora.yaml name=refined init_adapter=runs/babyai/reward_model \
        data.mix_dir=data/babyai_rollouts data.mix_ratio=0.3   # on-policy refinement: from the parent's LoRA

Writes runs/<name>/: run.json (config, seed, versions, git commit), checkpoints/last.ckpt,
the logger's files (wandb/ offline by default, or csv/), reward_model/ (peft adapter +
reward_model.json, or full weights when `lora: null`), summary.json. A rerun resumes from
checkpoints/last.ckpt (resume: true) and continues the step count.

init_adapter starts a new run (step 0, fresh optimiser) from a reward model's LoRA adapter
(vlmr.finetune.parent); data.mix_dir replaces a data.mix_ratio share of the training samples with
another dataset's (vlmr.finetune.datamodule). run.json and summary.json record `parent_adapter` and `mix`.

What a resume may change (vlmr.finetune.resume; docs/DESIGN.md, "Resuming a run"): changed model,
lora, loss, seed, data (its shards, batch_size, shuffle_buffer) or number of processes are refused
with the changed keys listed; changed optim.*, trainer.max_steps, trainer.grad_clip and
trainer.precision are applied from the checkpoint's step (the schedule rebuilt from the new values)
and recorded under "resumes" in run.json and summary.json; the rest (paths, logging, validation and
checkpoint intervals, hardware, strict) never blocks a resume.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Literal

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pydantic import Field
from vlmr.finetune.augment import AugmentSection
from vlmr.finetune.export import to_reward_model
from vlmr.finetune.lit_module import (
    ClipFinetuneModule,
    LossSection,
    ModelSection,
    NonFiniteLossError,
    OptimSection,
)
from vlmr.finetune.lora import LoraSection
from vlmr.finetune.parent import start_from_parent
from vlmr.finetune.resume import check_resume, run_record
from vlmr.finetune.validation import SUMMARY_KEYS

from vlmr.core.config import PositiveInt, config_dataclass, config_to_dict, stage_main
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, check_writable, set_usual_mode, write_error
from vlmr.core.provenance import run_info
from vlmr.core.reporting import fmt
from vlmr.core.tracking import finish_lightning_logger, lightning_logger

BASE_INIT_FILE = "base_init.safetensors"


@config_dataclass
class DataSection:
    dir: str  # dataset folder written by `vlmr collect` (shards + manifest.json)
    batch_size: PositiveInt = 64  # frames per batch and per device
    num_workers: int = 0  # dataloader workers (shards are split across them)
    shuffle_buffer: int = 1000  # webdataset sample shuffle buffer for train
    select_fraction: float = 0.0  # share of train env seeds carved out as the `select` split, which validation
    # then runs on (never val, the split calibration fits on); needed by trainer.early_stopping
    mix_dir: str | None = None  # a second dataset (e.g. agents' rollouts; same goal set and image size) mixed into
    # the training stream; validation stays on dir's select/val split
    mix_ratio: Annotated[float, Field(ge=0, le=1)] = 0.5  # share of training samples drawn from mix_dir, in [0, 1]


@config_dataclass
class EarlyStoppingSection:
    monitor: str = "val/own_goal_auroc"  # validation metric to stop on and to pick the best checkpoint by
    mode: Literal["max", "min"] = "max"  # max for AUROC, min for a loss (val/loss)
    patience: int = 5  # validations without an improvement of min_delta before training stops
    min_delta: float = 0.0  # smallest change that counts as an improvement

    def __post_init__(self):
        if self.patience < 1 or self.min_delta < 0:
            raise ValueError(f"need patience >= 1 and min_delta >= 0, got {self.patience}, {self.min_delta}")


@config_dataclass
class TrainerSection:
    max_steps: int = 200  # optimizer steps; 0 = no training: export the zero-shot model and validate it
    max_minutes: float | None = None  # wall-clock budget; stops early (checkpointed) when reached
    val_every_n_epochs: int = 1  # validate after every N passes over the train split
    val_every_n_steps: int | None = None  # also validate every N steps (for large datasets)
    limit_val_batches: int | None = None  # at most this many val batches per validation (null = all)
    checkpoint_every_n_steps: int = 50  # write checkpoints/last.ckpt every N steps (and at the end)
    grad_clip: float | None = 1.0  # gradient-norm clipping (null = off)
    precision: str = "auto"  # auto = bf16-mixed on GPU, 32-true on CPU; or any Lightning precision
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str | list[int] = "auto"  # passed to the Trainer
    strategy: str = "auto"  # auto | ddp | ddp_spawn | fsdp ... passed to the Trainer
    num_nodes: int = 1  # passed to the Trainer
    log_every_n_steps: int = 10  # metric logging interval
    progress_bar: bool = True  # Lightning's progress bar
    early_stopping: EarlyStoppingSection | None = None  # stop on a plateau of a validation metric (max_steps
    # stays the cap) and export the best checkpoint, not the last; null = train max_steps, export the last

    def __post_init__(self):
        if self.max_steps < 0 or self.checkpoint_every_n_steps < 1 or self.val_every_n_epochs < 1:
            raise ValueError("need max_steps >= 0, checkpoint_every_n_steps >= 1 and val_every_n_epochs >= 1")


@config_dataclass
class FinetuneConfig:
    name: str  # run name: outputs go to {output_dir}/{name}/
    data: DataSection  # the training data
    output_dir: str = "runs"  # parent folder of runs
    seed: int = 0  # seed for init, data order and LoRA init
    model: ModelSection = dataclasses.field(default_factory=ModelSection)  # base CLIP and reward-model spec
    lora: LoraSection | None = dataclasses.field(default_factory=LoraSection)  # LoRA settings; null = full training
    loss: LossSection = dataclasses.field(default_factory=LossSection)  # loss weights
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)  # optimizer and schedule
    trainer: TrainerSection = dataclasses.field(default_factory=TrainerSection)  # steps, hardware, checkpoints
    augment: AugmentSection | None = None  # label-preserving training-frame augmentations (finetune/augment.py); null = off
    logger: Literal["wandb", "csv", "none"] = "wandb"  # W&B (offline unless WANDB_MODE is set), CSV, or none
    wandb_project: str = "vlmr"  # W&B project
    resume: bool = True  # continue from checkpoints/last.ckpt when it exists; false = start over
    save_merged: bool = False  # also write reward_model_merged/ with LoRA merged into full weights
    strict: bool = False  # warnings about data or calibration quality are errors (docs/DESIGN.md, 'Strict mode')
    init_adapter: str | None = None  # reward-model dir (LoRA) whose adapter this new run starts from (finetune/parent.py)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file and renamed: a killed run never leaves a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            set_usual_mode(tmp)  # fsspec applies the umask it first saw in this process, not the current one
            os.replace(tmp, path)
        except OSError as e:  # a full disk: no partial temp file, and one line naming the checkpoint
            tmp.unlink(missing_ok=True)
            raise write_error(path, e, "checkpoint") from None


class Throughput(pl.Callback):
    """Training images per second, data loading included, validation and checkpoint writes excluded."""

    def __init__(self):
        self.images, self.seconds, self._last = 0, 0.0, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self._last is None:  # first batch after start or validation: its loading time is not counted
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self.seconds += now - self._last
        self.images += len(batch["labels"])
        self._last = now
        module.log("train/images_per_s", self.images / max(self.seconds, 1e-9), batch_size=len(batch["labels"]))

    def on_validation_start(self, trainer, module):
        self._last = None

    def on_save_checkpoint(self, trainer, module, checkpoint):
        self._last = None

    @property
    def rate(self) -> float | None:
        return self.images / self.seconds if self.seconds else None  # None: no training step was timed


def resolve_precision(cfg: TrainerSection) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    gpu = torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if gpu else "32-true"


def world_size(devices: int | str | list[int], num_nodes: int, devices_per_node: int) -> int:
    """The number of training processes Lightning starts: num_nodes x the devices used on each node.

    devices as the Trainer takes it: an int (-1 = all), a list of device ids, or a string ("auto", "-1",
    "2", "0,1"); devices_per_node is what "auto" and -1 mean, the accelerator's device count on a node.
    """
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return devices_per_node * num_nodes
        if "," in text:
            return len([d for d in text.split(",") if d.strip()]) * num_nodes
        try:
            devices = int(text)
        except ValueError:
            raise VlmrError(f"trainer.devices={devices!r} is not a device count, a list of ids or 'auto'") from None
    if isinstance(devices, list):
        return len(devices) * num_nodes
    return (devices_per_node if devices == -1 else devices) * num_nodes


def accelerator_devices(accelerator: str) -> int:
    """Devices of one node that Lightning's "auto" uses: every CUDA device for gpu/cuda/auto when there are any,
    else one (a CPU run is one process unless devices asks for more)."""
    from pytorch_lightning.accelerators import CUDAAccelerator

    if accelerator in ("auto", "gpu", "cuda") and CUDAAccelerator.is_available():
        return CUDAAccelerator.auto_device_count()
    return 1


def ddp_batch_limit(dm, split: str, world: int, batch_size: int) -> int:
    """Batches every rank is sure to have in one pass: shards are split across ranks, and ranks must step together."""
    sizes = sorted(dm.shard_sizes(split))
    per_rank = len(sizes) // world
    if per_rank == 0:
        raise VlmrError(f"dataset {dm.data_dir} has {len(sizes)} {split} shards for {world} processes; collect with "
                        f"a smaller shard_size so that every process gets at least one shard")
    return max(1, sum(sizes[:per_rank]) // batch_size)


def prepare_base(cfg: FinetuneConfig, run_dir: Path) -> ModelSection:
    """A random-init base with LoRA must be a file the adapter can reference: save it once, reuse it on resume."""
    model = cfg.model
    if model.pretrained or cfg.lora is None or model.arch.startswith(("hf-hub:", "local-dir:")):
        return model
    path = run_dir / BASE_INIT_FILE
    if not path.is_file():
        from safetensors.torch import save_file
        from vlmr.finetune.models import create_clip

        torch.manual_seed(cfg.seed)
        clip, _ = create_clip(model.arch)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp))
            set_usual_mode(tmp)  # safetensors creates its files 0600
            os.replace(tmp, path)
        except Exception as e:  # safetensors reports a full disk as its own error type
            tmp.unlink(missing_ok=True)
            from vlmr.core.files import as_os_error

            if (os_err := as_os_error(e)) is None:
                raise
            raise write_error(path, os_err, "base weights") from None
    return dataclasses.replace(model, pretrained=str(path))




def finetune(cfg: FinetuneConfig, progress: bool | None = None) -> dict:
    """Train, validate, export the reward model; returns the summary (also written to summary.json)."""
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from vlmr.finetune.datamodule import ShardDataModule

    tc = cfg.trainer
    run_dir = Path(cfg.output_dir) / cfg.name
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    check_writable(run_dir, "run folder")  # before the data is read or a step is trained
    dm = ShardDataModule(cfg.data.dir, goals=cfg.model.goals, batch_size=cfg.data.batch_size,
                         num_workers=cfg.data.num_workers, shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.seed,
                         strict=cfg.strict, select_fraction=cfg.data.select_fraction, mix_dir=cfg.data.mix_dir,
                         mix_ratio=cfg.data.mix_ratio)
    if tc.early_stopping is not None and cfg.data.select_fraction == 0:
        raise VlmrError(f"run {cfg.name}: trainer.early_stopping picks a checkpoint, so it needs a split of its own: "
                        "set data.select_fraction (e.g. 0.1) to carve a select split from train; it must not be "
                        "val, the split calibration fits on")
    if tc.early_stopping is not None:  # a typo fails here, not after the first validation
        losses = [f"val/loss_{k}" for k in ("contrastive", "goal", "sigmoid") if getattr(cfg.loss, k) > 0]
        known = ["val/loss", *losses, *(f"val/{k}" for k in SUMMARY_KEYS)]
        per_goal = {f"val/{kind}/{g}" for kind in ("auroc", "ap") for g in dm.goals}
        if tc.early_stopping.monitor not in {*known, *per_goal}:
            raise VlmrError(f"run {cfg.name}: trainer.early_stopping.monitor={tc.early_stopping.monitor!r} was not "
                            f"logged by validation: it is none of its metrics; use one of {', '.join(known)} (or val/auroc/<goal>, val/ap/<goal>)")
    for split in ("train",) if dm.val_split == "select" else ("train", "val"):  # select is read from train
        dm.verify(split)  # a missing split or shard fails here, not mid-training; damaged shards are counted
    if dm.mix_dir is not None:
        dm.verify_mix()
    if last.is_file() and not cfg.resume:
        print(f"resume=false: starting over; removing the old checkpoints in {ckpt_dir}")
        shutil.rmtree(ckpt_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model_cfg = prepare_base(cfg, run_dir)
    parent = None
    if cfg.init_adapter is not None:  # a new run from a parent's LoRA weights: lora becomes the adapter's
        cfg, model_cfg, parent = start_from_parent(cfg, model_cfg)
    module = ClipFinetuneModule(dm.goals, model=dataclasses.asdict(model_cfg),
                                lora=dataclasses.asdict(cfg.lora) if cfg.lora is not None else None,
                                loss=dataclasses.asdict(cfg.loss), optim=dataclasses.asdict(cfg.optim),
                                max_steps=tc.max_steps,
                                augment=dataclasses.asdict(cfg.augment) if cfg.augment is not None else None,
                                init_adapter=parent and parent.path)
    info = run_info(config_to_dict(cfg), cfg.seed) | {"parent_adapter": parent and parent.record,
                                                      "mix": dm.mix_record()}
    logger = lightning_logger(cfg.logger, run_dir, info, cfg.wandb_project, cfg.name, cfg.resume,
                              rank=pl.utilities.rank_zero_only.rank)
    throughput = Throughput()
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, save_top_k=0, monitor=None,
                                 every_n_train_steps=tc.checkpoint_every_n_steps, enable_version_counter=False)
    callbacks = [checkpoint, throughput] + ([LearningRateMonitor("step")] if logger else [])
    best = None
    if tc.early_stopping is not None:  # convergence, not a step count, ends training; the best step is exported
        es = tc.early_stopping
        best = ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor=es.monitor, mode=es.mode,
                               save_top_k=1, save_last=False, enable_version_counter=False)
        callbacks += [best, EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience,
                                          min_delta=es.min_delta, check_finite=False)]
    world = world_size(tc.devices, tc.num_nodes, accelerator_devices(tc.accelerator))
    trainer = pl.Trainer(
        max_steps=tc.max_steps if tc.max_steps > 0 else -1, max_epochs=-1,
        max_time={"minutes": tc.max_minutes} if tc.max_minutes else None,
        accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, num_nodes=tc.num_nodes,
        precision=resolve_precision(tc), logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        gradient_clip_val=tc.grad_clip, log_every_n_steps=tc.log_every_n_steps,
        check_val_every_n_epoch=None if tc.val_every_n_steps else tc.val_every_n_epochs,
        val_check_interval=tc.val_every_n_steps, limit_val_batches=tc.limit_val_batches,
        limit_train_batches=ddp_batch_limit(dm, "train", world, cfg.data.batch_size) if world > 1 else None,
        num_sanity_val_steps=0, default_root_dir=str(run_dir), enable_model_summary=False,
        enable_progress_bar=tc.progress_bar if progress is None else progress,
    )
    ckpt_path = str(last) if cfg.resume and last.is_file() else None
    module.run_record = {"config": run_record(cfg, dm.manifest, world, dm.mix_manifest, parent and parent.model_id),
                         "resumes": []}
    if ckpt_path:  # refuse changed settings that would mix two runs; apply and record the optimisation ones
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
        module.run_record["resumes"] = check_resume(saved, module.run_record["config"], cfg, trainer.is_global_zero)
        info["resumes"] = module.run_record["resumes"]
        del saved
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "run.json", info)
    start = time.perf_counter()
    best_step = None
    try:
        if tc.max_steps > 0:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
            trainer.save_checkpoint(str(last))  # the final state, for a later resume with more steps
        steps_trained, curve = trainer.global_step, list(module.val_history)  # loading the best ckpt rewinds both
        if best is not None and best.best_model_path:
            best_step = int(torch.load(best.best_model_path, map_location="cpu", weights_only=False)["global_step"])
            trainer.validate(module, datamodule=dm, ckpt_path=best.best_model_path, verbose=False)  # best weights
        elif module.val_step_seen != trainer.global_step or tc.max_steps == 0:
            trainer.validate(module, datamodule=dm, verbose=False)
    except NonFiniteLossError as e:
        lower = f"optim.lr={cfg.optim.lr / 10:g}"
        if last.is_file():
            step = torch.load(last, map_location="cpu", weights_only=False, mmap=True)["global_step"]
            how = (f"the last good checkpoint is {last} (step {step}). Rerun with a lower learning rate, e.g. {lower}: "
                   f"the run continues from step {step} with it applied (resume=false starts over)")
        else:
            how = f"no checkpoint was written yet. Rerun with a lower learning rate, e.g. {lower}"
        clip = "" if tc.grad_clip else ", or with trainer.grad_clip=1.0"
        raise VlmrError(f"run {cfg.name}: {e}. Training stopped; {how}{clip}.") from None
    except (RuntimeError, MisconfigurationException) as e:  # Lightning's words for a metric validation never logged
        if best is None or not any(m in str(e) for m in ("conditioned on metric", "could not find the monitored key")):
            raise
        raise VlmrError(f"run {cfg.name}: trainer.early_stopping.monitor={tc.early_stopping.monitor!r} was not "
                        "logged by validation; use val/loss or one of val/auroc_mean, val/ap_mean, "
                        "val/retrieval_top1, val/own_goal_auroc (own-goal needs frames with missions)") from None
    finally:
        finish_lightning_logger(logger)
    metrics = module.val_summary  # None where undefined: null in summary.json
    summary = {"name": cfg.name, "steps": steps_trained, "start_step": module.start_step,
               "best_step": best_step,
               "stopped_early": best is not None and 0 < steps_trained < tc.max_steps,
               "val_split": dm.val_split, "val_curve": curve,
               "resumed_from": ckpt_path, "resumes": module.run_record["resumes"],
               "train_seconds": round(time.perf_counter() - start, 2), "images_per_s": throughput.rate,
               "temperature": float(module.reward_temperature().detach()), "val": metrics,
               "mode": "lora" if cfg.lora is not None else "full", "world_size": trainer.world_size,
               "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
               "total_params": sum(p.numel() for p in module.clip.parameters()),
               "reward_model": str(run_dir / "reward_model"),
               "skipped_samples": dm.skipped_by_split,  # damaged samples left out (this process and its workers)
               "parent_adapter": parent and parent.record, "mix": dm.mix_record()}
    if trainer.is_global_zero:
        module.cpu()
        rm = to_reward_model(module, with_adapter=steps_trained > 0 or parent is not None)
        rm.save(run_dir / "reward_model", full_weights=cfg.lora is None)
        if cfg.save_merged and cfg.lora is not None and steps_trained > 0:
            rm.save(run_dir / "reward_model_merged", full_weights=True)
            summary["reward_model_merged"] = str(run_dir / "reward_model_merged")
        atomic_write_json(run_dir / "summary.json", summary)
        print(f"finetune {cfg.name}: {summary['steps']} steps, {fmt(throughput.rate, 1)} img/s; val mean AUROC "
              f"{fmt(metrics.get('val/auroc_mean'))}, own-goal AUROC {fmt(metrics.get('val/own_goal_auroc'))}, "
              f"retrieval top-1 {fmt(metrics.get('val/retrieval_top1'))}; reward model -> {summary['reward_model']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, FinetuneConfig, finetune, "vlmr finetune",
                      "Adapt a CLIP reward model with LoRA (or train it fully) on frame-caption shards.",
                      kind="finetune")


if __name__ == "__main__":
    import sys

    sys.exit(main())
