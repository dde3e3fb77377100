"""Model selection on a split of its own: the select carve, early stopping, and the exported best checkpoint.

    .venv/bin/python -m pytest tests/test_finetune_selection.py -q
"""

from __future__ import annotations

import pytest
from test_finetune import make_cfg
from vlmr.finetune.datamodule import ShardDataModule, in_select
from vlmr.finetune.train import finetune

from vlmr.core.dataset import iter_split
from vlmr.core.errors import VlmrError


def test_select_split_is_carved_from_train_by_env_seed(babyai_dataset):
    dm = ShardDataModule(babyai_dataset, batch_size=64, shuffle_buffer=0, select_fraction=0.25)
    train = [k for b in dm.train_dataloader() for k in b["keys"]]
    select = [k for b in dm.val_dataloader() for k in b["keys"]]
    seeds = {s["key"]: s["meta"]["env_seed"] for s in iter_split(babyai_dataset, "train")}
    assert dm.val_split == "select" and train and select
    assert sorted(train + select) == sorted(seeds)  # a partition of train, nothing from val
    assert all(in_select(seeds[k], 0.25) for k in select) and not any(in_select(seeds[k], 0.25) for k in train)
    assert {seeds[k] for k in train}.isdisjoint({seeds[k] for k in select})  # whole episodes
    assert sum(dm.shard_sizes("train")) == len(train)
    assert ShardDataModule(babyai_dataset).val_split == "val"


def test_shard_sizes_leave_out_a_shard_the_loader_will_skip(tmp_path, babyai_dataset):
    """DDP ranks step together on the batches every rank is sure to have: a damaged shard has none."""
    import shutil

    from vlmr.finetune.train import ddp_batch_limit

    data = tmp_path / "d"
    shutil.copytree(babyai_dataset, data)
    dm = ShardDataModule(data, batch_size=8, shuffle_buffer=0)
    sizes = dm.shard_sizes("train")
    shard = sorted(data.glob("train-*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:-1024])  # truncated
    assert sorted(dm.shard_sizes("train")) == sorted(sizes[1:])
    assert ddp_batch_limit(dm, "train", 1, 8) == sum(sizes[1:]) // 8


def test_early_stopping_stops_on_a_plateau_and_exports_the_best_checkpoint(tmp_path, babyai_dataset):
    # a learning rate this high wrecks the model within a few steps: the best validation comes early
    cfg = make_cfg(tmp_path, babyai_dataset, data={"select_fraction": 0.3}, optim={"lr": 0.5, "warmup_steps": 0},
                   trainer={"max_steps": 60, "val_every_n_steps": 2, "limit_val_batches": None,
                            "early_stopping": {"monitor": "val/own_goal_auroc", "mode": "max", "patience": 2}})
    s = finetune(cfg, progress=False)
    curve = [h for h in s["val_curve"] if h["val/own_goal_auroc"] is not None]
    assert s["stopped_early"] and s["steps"] < 60 and s["val_split"] == "select"
    best = max(curve, key=lambda h: h["val/own_goal_auroc"])
    assert s["best_step"] == best["step"]
    # the exported model is the best step's: validating it again gives the best validation's figure, not a
    # later one's. Not bit for bit: on some CPUs the two validations of this wrecked model differ by about 0.001
    exported, top = s["val"]["val/own_goal_auroc"], best["val/own_goal_auroc"]
    assert exported == pytest.approx(top, abs=5e-3)
    later = [h["val/own_goal_auroc"] for h in curve if h["step"] > s["best_step"]]
    assert len(later) == 2 and all(v <= top for v in later)  # patience 2, then stop
    assert all(abs(exported - top) <= abs(exported - v) for v in later)  # <=: a later tie is the same figure


def test_early_stopping_without_a_select_split_is_refused(tmp_path, babyai_dataset):
    cfg = make_cfg(tmp_path, babyai_dataset, trainer={"early_stopping": {"patience": 2}})
    with pytest.raises(VlmrError, match="select_fraction"):
        finetune(cfg, progress=False)


def test_an_unknown_monitor_is_a_one_line_error(tmp_path, babyai_dataset):
    cfg = make_cfg(tmp_path, babyai_dataset, data={"select_fraction": 0.3},
                   trainer={"val_every_n_steps": 2, "early_stopping": {"monitor": "val/nope", "patience": 2}})
    with pytest.raises(VlmrError, match="val/nope.*was not logged"):
        finetune(cfg, progress=False)


def test_a_monitor_validation_cannot_compute_is_a_one_line_error(tmp_path, shapes_dataset):
    """Shapes frames have no mission, so own-goal AUROC is never logged: Lightning's complaint becomes ours."""
    cfg = make_cfg(tmp_path, shapes_dataset, data={"select_fraction": 0.3},
                   trainer={"val_every_n_steps": 2, "early_stopping": {"monitor": "val/own_goal_auroc", "patience": 2}})
    with pytest.raises(VlmrError, match=r"val/own_goal_auroc.*was not logged by validation.*own-goal needs") as err:
        finetune(cfg, progress=False)
    assert "\n" not in str(err.value)
