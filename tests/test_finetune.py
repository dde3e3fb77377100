"""Fine-tuning: LoRA targets, loss goes down, adapter round trip, outputs, resume, NaN guard, configs, bad input.

    .venv/bin/python -m pytest tests/test_finetune.py -q          (about a minute on 2 cores)

Everything runs vlmr-tiny on the session's small shapes dataset (tests/conftest.py).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from vlmr.finetune.datamodule import ShardDataModule
from vlmr.finetune.export import to_reward_model
from vlmr.finetune.lit_module import ClipFinetuneModule
from vlmr.finetune.lora import LoraSection, lora_target_regex
from vlmr.finetune.models import create_clip
from vlmr.finetune.reward_model import RewardModel
from vlmr.finetune.train import FinetuneConfig, finetune, world_size
from vlmr.finetune.validation import goal_metrics

from vlmr.core.config import build_config, load_config
from vlmr.core.errors import VlmrError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "finetune"


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_cfg(out_dir, data_dir, **extra) -> FinetuneConfig:
    base = {"name": "run", "output_dir": str(out_dir), "data": {"dir": str(data_dir), "batch_size": 32, "shuffle_buffer": 64},
            "model": {"arch": "vlmr-tiny"}, "lora": {"r": 4, "alpha": 8}, "optim": {"lr": 3e-3, "warmup_steps": 2},
            "trainer": {"max_steps": 6, "checkpoint_every_n_steps": 3, "progress_bar": False, "limit_val_batches": 2},
            "logger": "none"}
    return build_config(FinetuneConfig, merge(base, extra), "test config")


def save_base(path: Path) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    clip, _ = create_clip("vlmr-tiny")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return str(path)


def fixed_batch(data_dir, goals, n=32):
    dm = ShardDataModule(data_dir, goals=goals, batch_size=n, shuffle_buffer=0)
    return next(iter(dm.val_dataloader()))


def test_lora_targets_follow_the_config(tmp_path):
    goals = ["a red circle", "a blue box"]
    lora = {"r": 2, "vision_attention": True, "vision_mlp": False, "text_attention": False, "text_mlp": True}
    m = ClipFinetuneModule(goals, {"arch": "vlmr-tiny"}, lora, {}, {}, max_steps=1)
    names = [n for n, p in m.clip.named_parameters() if p.requires_grad and "lora_" in n]
    assert any(".visual." in n and ".attn." in n for n in names)
    assert not any(".visual." in n and ".mlp." in n for n in names)
    assert any(".visual." not in n and ".mlp." in n for n in names)
    assert not any(".visual." not in n and ".attn." in n for n in names)
    assert m.text_trainable
    # freeze_text drops text targets; the CLIP's own weights stay frozen under LoRA
    m = ClipFinetuneModule(goals, {"arch": "vlmr-tiny", "freeze_text": True}, {"r": 2}, {}, {}, max_steps=1)
    trainable = [n for n, p in m.clip.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".visual." in n for n in trainable) and not m.text_trainable
    frac = sum(p.numel() for p in m.clip.parameters() if p.requires_grad) / sum(p.numel() for p in m.clip.parameters())
    assert frac < 0.02
    # full training with a frozen text tower trains the vision tower only
    m = ClipFinetuneModule(goals, {"arch": "vlmr-tiny", "freeze_text": True}, None, {}, {}, max_steps=1)
    assert all(not p.requires_grad for n, p in m.clip.named_parameters() if n.startswith(("transformer.", "token_")))
    assert all(p.requires_grad for n, p in m.clip.named_parameters() if n.startswith("visual."))
    with pytest.raises(VlmrError, match="no target modules"):
        lora_target_regex(LoraSection(vision_attention=False, vision_mlp=False), True)


def test_training_lowers_loss_and_adapter_round_trips(shapes_dataset, tmp_path):
    """A few LoRA steps lower the loss on a fixed batch; the saved adapter reloads with identical logits."""
    from peft import PeftModel

    base = save_base(tmp_path / "base.safetensors")
    dm = ShardDataModule(shapes_dataset, batch_size=32, shuffle_buffer=64)
    torch.manual_seed(0)
    module = ClipFinetuneModule(dm.goals, {"arch": "vlmr-tiny", "pretrained": base}, {"r": 8, "alpha": 16},
                                {}, {"lr": 5e-3, "warmup_steps": 2}, max_steps=24)
    batch = fixed_batch(shapes_dataset, dm.goals)

    def loss_on_batch():
        module.eval()
        with torch.no_grad():
            loss = float(module.compute_losses(batch)[0])
        module.train()
        return loss

    before = loss_on_batch()
    trainer = pl.Trainer(max_steps=24, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    after = loss_on_batch()
    assert after < before - 0.1, (before, after)

    rm = to_reward_model(module)
    rm.save(tmp_path / "rm")
    assert (tmp_path / "rm" / "adapter_model.safetensors").is_file()
    fresh, tokenizer = create_clip("vlmr-tiny", base)
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "rm")).eval()
    x = torch.randn(3, 3, 64, 64)
    t = tokenizer(["a red circle", "a blue box", "a grey key"])
    with torch.no_grad():
        ours = module.clip(x, t)
        theirs = loaded(x, t)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    # and the reward model (LoRA merged) gives the trained module's P(g|o), with the trained temperature
    frames = batch["frames"][:8]
    reloaded = RewardModel.load(tmp_path / "rm")
    assert reloaded.spec.temperature == pytest.approx(float(module.reward_temperature().detach()))
    assert torch.allclose(reloaded.all_probs(frames), rm.all_probs(frames), atol=1e-5)


@pytest.fixture(scope="module")
def lora_run(shapes_dataset, tmp_path_factory):
    """A LoRA run on a random-init base (the control arm), with the CSV logger: 6 steps, checkpoints every 3."""
    out = tmp_path_factory.mktemp("runs")
    cfg = make_cfg(out, shapes_dataset, logger="csv", trainer={"val_every_n_steps": 3, "log_every_n_steps": 1})
    return cfg, finetune(cfg)


def test_run_writes_provenance_logs_checkpoint_and_reward_model(lora_run):
    cfg, summary = lora_run
    run = Path(cfg.output_dir) / cfg.name
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 0 and info["config"]["lora"]["r"] == 4 and "torch" in info["versions"] and "commit" in info["git"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    metrics = next((run / "csv").rglob("metrics.csv")).read_text()
    assert "train/loss" in metrics and "val/auroc_mean" in metrics and "val/auroc/a red circle" in metrics
    assert summary["steps"] == 6 and summary["start_step"] == 0 and summary["mode"] == "lora"
    import csv

    logged = [r for r in csv.DictReader(metrics.splitlines()) if r.get("val/auroc_mean")]
    for key in ("val/auroc_mean", "val/retrieval_top1"):  # summary.json holds the last validation's values
        assert summary["val"][key] == pytest.approx(float(logged[-1][key]), abs=1e-6)
    assert summary["val"]["val/own_goal_auroc"] is None  # the shapes corpus has no missions
    # the random-init base was saved first, and the adapter dir references it
    rm_dir = run / "reward_model"
    spec = json.loads((rm_dir / "reward_model.json").read_text())
    assert (run / "base_init.safetensors").is_file() and spec["pretrained"] == "../base_init.safetensors"
    assert (rm_dir / "adapter_config.json").is_file() and spec["temperature"] == pytest.approx(summary["temperature"])
    rm = RewardModel.load(rm_dir)
    probs = rm.all_probs(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert probs.shape == (2, len(rm.goals)) and torch.isfinite(probs).all()


def test_resume_continues_the_step_count(lora_run, tmp_path):
    cfg, _ = lora_run
    shutil.copytree(Path(cfg.output_dir) / cfg.name, tmp_path / cfg.name)
    cfg2 = dataclasses.replace(cfg, output_dir=str(tmp_path), trainer=dataclasses.replace(cfg.trainer, max_steps=9))
    summary = finetune(cfg2)
    assert summary["start_step"] == 6 and summary["steps"] == 9
    assert summary["resumed_from"].endswith("last.ckpt")
    # a different goal order cannot silently reuse the checkpoint (labels would be misaligned)
    goals = list(reversed(RewardModel.load(tmp_path / cfg.name / "reward_model").goals))
    cfg3 = dataclasses.replace(cfg2, model=dataclasses.replace(cfg.model, goals=goals),
                               trainer=dataclasses.replace(cfg.trainer, max_steps=12))
    with pytest.raises(VlmrError, match="different goal set"):
        finetune(cfg3)


def test_nan_loss_stops_keeps_last_good_checkpoint_and_resumes(shapes_dataset, tmp_path, monkeypatch):
    from vlmr.finetune import losses

    real = losses.GoalClassificationLoss.forward
    calls = []

    def poisoned(self, *args):
        calls.append(1)
        out = real(self, *args)
        return out * float("nan") if len(calls) >= 5 else out  # the 5th training step (global step 4)

    monkeypatch.setattr(losses.GoalClassificationLoss, "forward", poisoned)
    cfg = make_cfg(tmp_path, shapes_dataset, trainer={"max_steps": 8, "checkpoint_every_n_steps": 2})
    with pytest.raises(VlmrError, match="last good checkpoint") as err:
        finetune(cfg)
    assert "nan" in str(err.value) and "step 4" in str(err.value)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "reward_model").exists()
    monkeypatch.setattr(losses.GoalClassificationLoss, "forward", real)
    summary = finetune(cfg)  # the rerun picks up at the checkpoint
    assert summary["start_step"] == 4 and summary["steps"] == 8


def test_full_training_saves_full_weights(shapes_dataset, tmp_path):
    cfg = make_cfg(tmp_path, shapes_dataset, lora=None, loss={"goal": 0.0}, trainer={"max_steps": 2})
    summary = finetune(cfg)
    rm_dir = tmp_path / "run" / "reward_model"
    assert (rm_dir / "open_clip_model.safetensors").is_file() and not (rm_dir / "adapter_model.safetensors").exists()
    assert summary["mode"] == "full" and summary["trainable_params"] == summary["total_params"]  # tau is fixed without the goal loss
    assert not (tmp_path / "run" / "base_init.safetensors").exists()
    rm = RewardModel.load(rm_dir)
    assert rm.spec.pretrained == "open_clip_model.safetensors"
    # with the goal loss off, the exported tau is the CLIP's own logit scale
    assert rm.spec.temperature == pytest.approx(1.0 / float(rm.clip.logit_scale.exp()), rel=1e-5)


def test_zero_steps_exports_the_zero_shot_model(shapes_dataset, tmp_path):
    base = save_base(tmp_path / "base.safetensors")
    summary = finetune(make_cfg(tmp_path, shapes_dataset, model={"pretrained": base}, trainer={"max_steps": 0}))
    rm_dir = tmp_path / "run" / "reward_model"
    assert summary["steps"] == 0 and summary["val"]["val/auroc_mean"] is not None
    assert not (rm_dir / "adapter_model.safetensors").exists()  # a zero-shot model dir has no adapter
    zero_shot = RewardModel.create("vlmr-tiny", RewardModel.load(rm_dir).goals, pretrained=base,
                                   temperature=summary["temperature"])
    frames = fixed_batch(shapes_dataset, zero_shot.goals, 8)["frames"]
    assert torch.allclose(RewardModel.load(rm_dir).all_probs(frames), zero_shot.all_probs(frames), atol=1e-6)


def test_bad_inputs_give_clear_errors(shapes_dataset, tmp_path, capsys):
    with pytest.raises(VlmrError, match="dataset folder not found"):
        finetune(make_cfg(tmp_path, tmp_path / "nope"))
    incomplete = tmp_path / "incomplete"
    shutil.copytree(shapes_dataset, incomplete)
    (incomplete / "manifest.json").unlink()
    with pytest.raises(VlmrError, match="incomplete"):
        finetune(make_cfg(tmp_path, incomplete))
    with pytest.raises(VlmrError, match="goal sets differ"):
        finetune(make_cfg(tmp_path, shapes_dataset, model={"goals": ["go to the red ball"]}))
    with pytest.raises(VlmrError, match="unknown key 'lora.rank'"):
        make_cfg(tmp_path, shapes_dataset, lora={"rank": 4})
    from vlmr.cli import main as vlmr

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(f"name: x\ndata: {{dir: {tmp_path / 'nope'}}}\n")
    assert vlmr(["finetune", str(cfg_file), "logger=none"]) == 2
    assert "dataset folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_run_one_real_step(path, shapes_dataset, tmp_path):
    """Each shipped config, shrunk to vlmr-tiny on random init and the shapes data, trains one step, validates
    and exports a reward model that loads; its own sizes and base references are checked on the raw file."""
    small = [f"data.dir={shapes_dataset}", f"output_dir={tmp_path}", "logger=none", "model.arch=vlmr-tiny",
             "model.pretrained=null", "data.batch_size=8", "trainer.max_steps=1", "trainer.limit_val_batches=1",
             "trainer.progress_bar=false"]
    raw = load_config(FinetuneConfig, path)
    summary = finetune(load_config(FinetuneConfig, path, small))
    assert summary["steps"] == 1 and summary["mode"] == ("full" if raw.lora is None else "lora")
    assert summary["val"]["val/auroc_mean"] is not None
    rm = RewardModel.load(tmp_path / raw.name / "reward_model")
    assert rm.spec.negatives == raw.model.negatives and rm.spec.templates == raw.model.templates
    assert raw.trainer.max_steps > 0
    if raw.lora is not None:  # LoRA configs adapt the base that base_shapes_full.yaml writes
        base = load_config(FinetuneConfig, CONFIG_DIR / "base_shapes_full.yaml")
        assert raw.model.pretrained == f"{base.output_dir}/{base.name}/reward_model/open_clip_model.safetensors"
        assert raw.data.dir != base.data.dir


@pytest.mark.parametrize("devices, num_nodes, per_node, expected", [
    ([0, 1], 1, 8, 2), (2, 1, 8, 2), ("auto", 1, 1, 1), ("auto", 2, 1, 2), ("auto", 1, 4, 4), ([0, 1], 2, 8, 4),
    (-1, 1, 4, 4), ("-1", 2, 4, 8), ("0,1,2", 1, 8, 3), ("3", 2, 8, 6)])
def test_world_size_counts_every_process(devices, num_nodes, per_node, expected):
    """"auto" and -1 mean every device of the accelerator on each node (1 on CPU); a list counts its ids."""
    assert world_size(devices, num_nodes, per_node) == expected


def test_world_size_rejects_an_unreadable_device_string():
    with pytest.raises(VlmrError, match="trainer.devices='gpus'"):
        world_size("gpus", 1, 1)


def test_validation_scores_by_hand():
    """Goal 0: scores rank both positives first (AUROC 1, AP 1); goal 1: one positive ranked 2nd of 4
    (AUROC 2/3, AP 1/2); goal 2 has no positive: left out, so the means are over goals 0 and 1."""
    probs = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.6, 0.1], [0.1, 0.7, 0.3], [0.2, 0.2, 0.4]])
    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
    out = goal_metrics(probs, labels, own=torch.tensor([-1, -1, -1, -1]))
    assert out["auroc"] == {0: 1.0, 1: pytest.approx(2 / 3, abs=1e-6)} and out["ap"] == {0: 1.0, 1: 0.5}
    assert out["auroc_mean"] == pytest.approx(5 / 6, abs=1e-6) and out["ap_mean"] == 0.75
    assert out["retrieval_top1"] == 1.0  # frames 0 and 1 have true goals, and their top goal (0) is true
    assert out["own_goal_auroc"] is None  # no frame has a mission
    # own goals: frame n scored for goal own[n] -> scores (0.9, 0.6, 0.7, 0.4) against labels (1, 1, 0, 0)
    out = goal_metrics(probs, labels, own=torch.tensor([0, 1, 1, 2]))
    assert out["own_goal_auroc"] == pytest.approx(0.75)


def test_wandb_offline_logs_metrics_and_sample_table(shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(tmp_path, shapes_dataset, logger="wandb", trainer={"max_steps": 2, "val_every_n_steps": 2})
    finetune(cfg)
    run = tmp_path / "run"
    run_id = (run / "wandb_id.txt").read_text().strip()
    offline = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and (offline[0] / f"run-{run_id}.wandb").stat().st_size > 0
    assert list(offline[0].rglob("samples_*.table.json"))  # frames with their top goals
    record = (offline[0] / f"run-{run_id}.wandb").read_bytes()  # offline, the config is in the run's record
    assert b"versions" in record and b"commit" in record  # the W&B config is the run's provenance (run.json)
    # a resumed run logs to the same W&B run id
    finetune(dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, max_steps=3)))
    assert (run / "wandb_id.txt").read_text().strip() == run_id
    # every offline run folder holds that run id's record (folder names carry the start second, and a suffix
    # when two runs start in the same second)
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all((d / f"run-{run_id}.wandb").is_file() for d in runs)


def test_sigmoid_loss_option_trains_its_scale_and_bias():
    goals = ["a red circle", "a blue box"]
    m = ClipFinetuneModule(goals, {"arch": "vlmr-tiny"}, {"r": 2}, {"contrastive": 0.0, "goal": 0.5, "sigmoid": 1.0},
                           {}, max_steps=1)
    batch = {"frames": torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8), "captions": goals * 2,
             "labels": torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])}
    total, parts, *_ = m.compute_losses(batch)
    assert set(parts) == {"sigmoid", "goal"}
    assert total.item() == pytest.approx(parts["sigmoid"].item() + 0.5 * parts["goal"].item(), rel=1e-6)
    total.backward()
    assert m.sigmoid_loss.bias.grad is not None and m.sigmoid_loss.log_scale.grad is not None
    assert not m.base_clip.logit_scale.requires_grad  # unused without the contrastive loss
