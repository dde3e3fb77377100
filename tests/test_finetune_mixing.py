"""Fine-tuning from a parent adapter (init_adapter) on a mix of datasets (data.mix_dir, data.mix_ratio).

    .venv/bin/python -m pytest tests/test_finetune_mixing.py -q

vlmr-tiny on the session's small shapes dataset (tests/conftest.py) and a second, smaller shapes
collection with other seeds standing in for agents' rollouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from vlmr.finetune.datamodule import ShardDataModule
from vlmr.finetune.export import to_reward_model
from vlmr.finetune.lit_module import ClipFinetuneModule
from vlmr.finetune.models import create_clip
from vlmr.finetune.reward_model import RewardModel, reward_model_id
from vlmr.finetune.train import FinetuneConfig, finetune

from vlmr.core.config import build_config
from vlmr.core.dataset import ShardSink, iter_split, read_manifest, write_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import sha256_file
from vlmr.core.integrity import frame_sha256
from vlmr.core.quality import QualityWarning


def collect_shapes(root: Path, name: str, train=64, seed=7) -> Path:
    from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

    return collect(CollectConfig(name=name, source="shapes", out_dir=str(root / name), image_size=64,
                                 frames=SplitFrames(train=train, val=32, test=32), shard_size=32, seed=seed),
                   progress=False)


def ft_config(out_dir, data_dir, base, **extra) -> FinetuneConfig:
    cfg = {"name": "run", "output_dir": str(out_dir), "data": {"dir": str(data_dir), "batch_size": 32, "shuffle_buffer": 64},
           "model": {"arch": "vlmr-tiny", "pretrained": str(base)}, "lora": {"r": 4, "alpha": 8},
           "optim": {"lr": 3e-3, "warmup_steps": 1},
           "trainer": {"max_steps": 3, "checkpoint_every_n_steps": 3, "progress_bar": False, "limit_val_batches": 1},
           "logger": "none"}
    for k, v in extra.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return build_config(FinetuneConfig, cfg, "test config")


def save_base(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    clip, _ = create_clip("vlmr-tiny")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return path


def lora_state(module) -> dict:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(module.clip).items()}


def as_rollouts(src: Path, dst: Path, half_size: bool = False) -> Path:
    """A copy of a dataset as another writer (agents' rollouts) would make it: source "rollouts", other keys, and
    one marked pixel per frame, so that no frame is also one of the main data's (half_size: frames of half the
    size)."""
    manifest = read_manifest(src)
    splits = {}
    for split in manifest["splits"]:
        samples, splits[split] = list(iter_split(src, split)), []
        for index in range(0, len(samples), 32):  # shards of 32 frames
            with ShardSink(dst, split, index // 32) as sink:
                for s in samples[index:index + 32]:
                    frame = s["frame"][::2, ::2].copy() if half_size else s["frame"].copy()
                    frame[0, 0] = (1, 2, 3)
                    meta = {k: v for k, v in s["meta"].items() if k != "frame_sha256"}
                    sink.write(f"9{s['key']}", frame, meta)
            splits[split].append(sink.stats)
    size = manifest["image_size"] // 2 if half_size else manifest["image_size"]
    write_manifest(dst, name="rollouts", source="rollouts", goals=manifest["goals"], image_size=size,
                   view=manifest.get("view"), splits=splits, config={"from": manifest["name"]})
    return dst


@pytest.fixture(scope="module")
def mix_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    return as_rollouts(collect_shapes(root, "shapes_small"), root / "rollouts")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_base(tmp_path_factory.mktemp("base") / "base.safetensors")


@pytest.fixture(scope="module")
def parent(shapes_dataset, base, tmp_path_factory):
    """A LoRA (r=4) reward model as `vlmr finetune` exports it, with random non-zero adapter weights (no fresh
    LoRA init looks like them) and its own temperature."""
    torch.manual_seed(3)
    module = ClipFinetuneModule(read_manifest(shapes_dataset)["goals"], {"arch": "vlmr-tiny", "pretrained": str(base)},
                                {"r": 4, "alpha": 8}, {}, {}, max_steps=1)
    with torch.no_grad():
        for name, p in module.clip.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    rm = to_reward_model(module)
    rm.spec = dataclasses.replace(rm.spec, temperature=0.05)
    return rm.save(tmp_path_factory.mktemp("parent") / "reward_model")


@pytest.fixture(scope="module")
def child(parent, shapes_dataset, mix_data, base, tmp_path_factory):
    """A run from the parent's adapter on the shapes data mixed half and half with mix_data; its config asks for
    another rank. Records the LoRA weights and temperature at the start of training."""
    out, seen, printed = tmp_path_factory.mktemp("child"), {}, io.StringIO()

    def spy(self):
        seen.update(lora=lora_state(self), tau=float(self.reward_temperature().detach()), step=self.global_step)

    real = ClipFinetuneModule.on_train_start
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(ClipFinetuneModule, "on_train_start", lambda self: (spy(self), real(self)))
        cfg = ft_config(out, shapes_dataset, base, init_adapter=str(parent), lora={"r": 8, "alpha": 16},
                        data={"mix_dir": str(mix_data), "mix_ratio": 0.5})
        summary = finetune(cfg)
    return out / "run", summary, seen, printed.getvalue()


def test_a_run_starts_from_the_parent_adapter_and_names_it(child, parent, mix_data):
    run, summary, seen, printed = child
    theirs = load_file(str(parent / "adapter_model.safetensors"))
    assert seen["step"] == 0 and set(seen["lora"]) == set(theirs)
    assert all(torch.equal(seen["lora"][k], theirs[k]) for k in theirs)  # step 0 is the parent's weights
    assert seen["tau"] == pytest.approx(0.05)  # the parent's temperature, not the base's 0.07
    trained = load_file(str(run / "reward_model" / "adapter_model.safetensors"))
    assert any(not torch.equal(trained[k], theirs[k]) for k in theirs)  # and it trained from there
    assert summary["start_step"] == 0 and summary["steps"] == 3
    # the config's rank is not the adapter's: the adapter's is taken, said and recorded
    assert "lora taken from the parent adapter" in printed and "r 8 -> 4" in printed
    info = json.loads((run / "run.json").read_text())
    expected = {"path": str(parent.resolve()), "model_id": reward_model_id(parent),
                "adapter_sha256": sha256_file(parent / "adapter_model.safetensors"),
                "lora_from_adapter": {"r": [8, 4], "alpha": [16.0, 8.0]}}
    assert info["parent_adapter"] == expected and summary["parent_adapter"] == expected
    assert info["config"]["lora"]["r"] == 4 and info["config"]["init_adapter"] == str(parent)
    mix = {"dir": str(mix_data), "name": "rollouts", "source": "rollouts", "ratio": 0.5,
           "manifest_sha256": sha256_file(mix_data / "manifest.json"), "skipped_samples": {"train": 0}}
    assert info["mix"] == mix and summary["mix"] == mix and summary["skipped_samples"] == {"train": 0, "val": 0}


def test_zero_steps_from_a_parent_exports_the_parent_adapter(parent, shapes_dataset, base, tmp_path):
    finetune(ft_config(tmp_path, shapes_dataset, base, init_adapter=str(parent), trainer={"max_steps": 0}))
    ours = load_file(str(tmp_path / "run" / "reward_model" / "adapter_model.safetensors"))
    theirs = load_file(str(parent / "adapter_model.safetensors"))
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    assert torch.allclose(RewardModel.load(tmp_path / "run" / "reward_model").all_probs(frames),
                          RewardModel.load(parent).all_probs(frames), atol=1e-6)


def test_resume_refuses_other_starting_weights_or_mix_data_but_not_a_moved_parent(child, parent, shapes_dataset,
                                                                                  mix_data, base, tmp_path):
    run = child[0]
    moved = shutil.copytree(parent, tmp_path / "moved_parent")
    other = shutil.copytree(parent, tmp_path / "other_parent")
    weights = load_file(str(other / "adapter_model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(other / "adapter_model.safetensors"))

    def resume(where, adapter, **data):
        shutil.copytree(run, tmp_path / where / "run")
        mix = {"mix_dir": str(mix_data), "mix_ratio": 0.5} | data
        return finetune(ft_config(tmp_path / where, shapes_dataset, base, init_adapter=str(adapter),
                                  data={k: v for k, v in mix.items() if v is not None}, trainer={"max_steps": 4}))

    summary = resume("moved", moved)
    assert summary["start_step"] == 3 and summary["steps"] == 4
    for where, adapter, data, key in (("other", other, {}, "parent_adapter"),
                                      ("ratio", parent, {"mix_ratio": 0.3}, "data.mix_ratio"),
                                      ("nomix", parent, {"mix_dir": None}, "data.mix_content")):
        with pytest.raises(VlmrError, match=rf"cannot resume .*{key} \(") as err:
            resume(where, adapter, **data)
        assert "\n" not in str(err.value)


def test_a_parent_that_does_not_fit_is_refused_in_one_line(parent, shapes_dataset, base, tmp_path):
    goals = ["a red circle", "a blue box"]
    zero_shot = RewardModel.create("vlmr-tiny", goals, pretrained=str(base)).save(tmp_path / "zero_shot")
    full = RewardModel.create("vlmr-tiny", goals).save(tmp_path / "full")  # a random base is saved whole
    other_base = save_base(tmp_path / "other_base.safetensors", seed=1)
    cases = [({"init_adapter": str(zero_shot)}, r"no adapter \(a zero-shot export\)"),
             ({"init_adapter": str(full)}, r"full weights \(lora: null\), so there is no LoRA adapter"),
             ({"init_adapter": str(tmp_path / "nowhere")}, "no reward_model.json there"),
             ({"init_adapter": str(parent), "lora": None}, "lora is null"),
             ({"init_adapter": str(parent), "model": {"pretrained": str(other_base)}},
              r"trained on vlmr-tiny with weights .*base\.safetensors.*set model\.arch=vlmr-tiny model\.pretrained="),
             ({"init_adapter": str(parent), "model": {"freeze_text": True}}, "set model.freeze_text=false")]
    for i, (extra, message) in enumerate(cases):
        with pytest.raises(VlmrError, match=message) as err:
            finetune(ft_config(tmp_path / str(i), shapes_dataset, base, **extra))
        assert "\n" not in str(err.value) and "init_adapter=" in str(err.value)


def frame_hashes(data: Path, split: str) -> set[str]:
    return {frame_sha256(s["frame"]) for s in iter_split(data, split)}


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_mix_ratio_sets_where_training_frames_come_from(shapes_dataset, mix_data, ratio):
    main, mix = frame_hashes(shapes_dataset, "train"), frame_hashes(mix_data, "train")
    assert not main & mix
    dm = ShardDataModule(shapes_dataset, batch_size=32, shuffle_buffer=64, mix_dir=mix_data, mix_ratio=ratio)
    from_mix = []
    for batch in itertools.islice(dm.train_dataloader(), 6):  # 192 frames: the 64 mix frames are repeated
        for frame, flag in zip(batch["frames"].numpy(), batch["from_mix"].tolist()):
            assert frame_sha256(frame) in (mix if flag else main)
            from_mix.append(flag)
    share = sum(from_mix) / len(from_mix)
    assert share == ratio if ratio in (0.0, 1.0) else 0.35 < share < 0.65
    # an epoch is one pass over the main train split, whatever the mix
    assert sum(len(b["keys"]) for b in dm.train_dataloader()) == read_manifest(shapes_dataset)["splits"]["train"]["samples"]
    assert dm.val_split == "val" and not any(b["from_mix"].any() for b in dm.val_dataloader())


def test_mix_data_must_fit_the_run(shapes_dataset, babyai_dataset, mix_data, base, tmp_path):
    with pytest.raises(VlmrError, match=r"key 'data\.mix_ratio'.*less than or equal to 1"):
        ft_config(tmp_path, shapes_dataset, base, data={"mix_dir": str(mix_data), "mix_ratio": 1.5})
    with pytest.raises(VlmrError, match=r"data\.mix_ratio=-0\.1 must be in \[0, 1\]"):
        ShardDataModule(shapes_dataset, mix_dir=mix_data, mix_ratio=-0.1)
    small = as_rollouts(mix_data, tmp_path / "small", half_size=True)
    for other, message in ((babyai_dataset, r"its goal set differs from this run's \(36 goals"),
                           (small, "its frames are 32 px but data.dir .* has 64 px frames")):
        with pytest.raises(VlmrError, match=rf"data\.mix_dir={re.escape(str(other))}: {message}") as err:
            finetune(ft_config(tmp_path, shapes_dataset, base, data={"mix_dir": str(other)}))
        assert "\n" not in str(err.value)


def test_damaged_mix_shards_are_counted_apart(shapes_dataset, mix_data, tmp_path):
    damaged = shutil.copytree(mix_data, tmp_path / "damaged")
    shard = damaged / "train-000000.tar"
    blob = bytearray(shard.read_bytes())
    blob[2000] ^= 0xFF
    shard.write_bytes(bytes(blob))
    dm = ShardDataModule(shapes_dataset, batch_size=32, shuffle_buffer=0, mix_dir=damaged, mix_ratio=1.0)
    with pytest.warns(QualityWarning, match="train-000000.tar: sha256"):
        batch = next(iter(dm.train_dataloader()))
    assert batch["from_mix"].all()
    assert dm.mix_skipped == {"train": 32} and dm.skipped_by_split == {"train": 0}
    with pytest.raises(VlmrError, match="sha256"):
        ShardDataModule(shapes_dataset, mix_dir=damaged, strict=True).verify_mix()
