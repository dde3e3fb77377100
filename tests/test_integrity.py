"""Shard and frame integrity: no stage reads a frame whose stored bytes differ from what was collected.

Faults: 8 bytes flipped inside a frame.png (still decodes), the same with the manifest re-signed, an edited
manifest sha256, a truncated shard, a dataset written before frame hashes; readers, the score cache,
`vlmr verify` and `vlmr score`.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import torch
from vlmr.calibrate.scores import score_split
from vlmr.finetune.datamodule import ShardDataModule
from vlmr.finetune.train import FinetuneConfig
from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect

from vlmr.core.dataset import MANIFEST_FILE, iter_split, load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import atomic_write_json, sha256_file
from vlmr.core.integrity import frame_sha256
from vlmr.core.quality import QualityWarning, StrictModeError


@pytest.fixture
def data(tmp_path):
    cfg = CollectConfig(name="t", source="shapes", out_dir=str(tmp_path / "d"), shard_size=20,
                        frames=SplitFrames(train=40, val=40, test=20))
    return collect(cfg, progress=False)


def flip_png(shard, member: int = 3) -> str:
    """Flip 8 bytes inside the member-th frame.png so that it still decodes, to other pixels; returns its key."""
    from PIL import Image

    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as t:
        m = [m for m in t.getmembers() if m.name.endswith("frame.png")][member]
    png = bytes(data[m.offset_data:m.offset_data + m.size])
    before = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    for off in range(png.index(b"IDAT") + 6, len(png) - 20):
        bad = bytearray(png)
        for k in range(8):
            bad[off + k] ^= 0x01
        try:
            after = np.asarray(Image.open(io.BytesIO(bytes(bad))).convert("RGB"))
        except Exception:  # noqa: BLE001 - this offset breaks the stream; try the next
            continue
        if after.shape == before.shape and (after != before).any():
            data[m.offset_data:m.offset_data + m.size] = bad
            shard.write_bytes(bytes(data))
            return m.name.split(".")[0]
    raise AssertionError("no offset gives a decodable, different frame")


def resign(out, name):
    """Write the shard's current sha256 into the manifest: the damage the shard hash alone cannot see."""
    manifest = read_manifest(out)
    for s in manifest["splits"].values():
        for e in s["shards"]:
            if e["name"] == name:
                e["sha256"] = sha256_file(out / name)
    atomic_write_json(out / MANIFEST_FILE, manifest)


def quiet_load(*args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays = load_split_arrays(*args, **kw)
    return arrays, [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]


def test_collection_stores_a_frame_hash_per_sample_and_flags_its_shards(data):
    manifest = read_manifest(data)
    assert all(e["frame_hashes"] for s in manifest["splits"].values() for e in s["shards"])
    samples = list(iter_split(data, "test"))
    assert len(samples) == 20 and all(frame_sha256(s["frame"]) == s["meta"]["frame_sha256"] for s in samples)
    assert frame_sha256(samples[0]["frame"]) != frame_sha256(samples[0]["frame"].reshape(-1, 64, 3)[::-1])


def test_flipped_png_bytes_skip_the_shard_or_stop_under_strict(data):
    flip_png(data / "val-000001.tar")
    arrays, msgs = quiet_load(data, "val")
    assert len(arrays.keys) == 20 and arrays.skipped == 20  # the damaged shard's 20 samples, none of its frames
    assert any("val-000001.tar: sha256" in m and "skipping its 20 samples" in m for m in msgs)
    with pytest.raises(StrictModeError, match="val-000001.tar: sha256"):
        load_split_arrays(data, "val", strict=True)
    dm = ShardDataModule(data, batch_size=8, strict=False)
    with pytest.warns(QualityWarning, match="val-000001.tar"):
        n = sum(len(b["keys"]) for b in dm.val_dataloader())
    assert n == 20 and dm.skipped_by_split == {"val": 20}
    with pytest.raises(StrictModeError):
        ShardDataModule(data, batch_size=8, strict=True).val_dataloader()


def test_a_resigned_shard_is_caught_frame_by_frame(data):
    key = flip_png(data / "val-000000.tar")
    resign(data, "val-000000.tar")  # the shard hash now matches: only the frame hash sees the damage
    arrays, msgs = quiet_load(data, "val")
    assert key not in arrays.keys and len(arrays.keys) == 39 and arrays.skipped == 1
    assert any(key in m and "frame_sha256 differs" in m for m in msgs)
    with pytest.raises(StrictModeError, match="frame_sha256 differs"):
        load_split_arrays(data, "val", strict=True)


def test_worker_skips_reach_the_parent_once_per_sample(data):
    flip_png(data / "val-000000.tar")
    resign(data, "val-000000.tar")
    dm = ShardDataModule(data, batch_size=8, num_workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):  # two epochs meet the same damaged sample
            assert sum(len(b["keys"]) for b in dm.val_dataloader()) == 39
    assert dm.skipped_by_split == {"val": 1}


def test_an_edited_manifest_hash_fails_the_shard(data):
    manifest = read_manifest(data)
    manifest["splits"]["test"]["shards"][0]["sha256"] = "0" * 64
    atomic_write_json(data / MANIFEST_FILE, manifest)
    with pytest.raises(VlmrError, match="no readable samples"):  # the only test shard is not trusted
        quiet_load(data, "test")
    with pytest.raises(StrictModeError, match="test-000000.tar: sha256"):
        load_split_arrays(data, "test", strict=True)


def test_old_datasets_load_with_one_warning_and_keep_shard_checks(data, tmp_path):
    import webdataset as wds

    manifest = read_manifest(data)
    for s in manifest["splits"].values():
        for e in s["shards"]:  # rewrite every shard as an older vlmr wrote it: no frame hashes
            shard = data / e["name"]
            samples = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False))
            with wds.TarWriter(str(shard)) as w:
                for x in samples:
                    meta = json.loads(x["meta.json"])
                    del meta["frame_sha256"]
                    w.write({"__key__": x["__key__"], "frame.png": x["frame.png"], "meta.json": json.dumps(meta).encode()})
            e.pop("frame_hashes")
            e["sha256"] = sha256_file(shard)
    atomic_write_json(data / MANIFEST_FILE, manifest)
    (arrays, first), (_, second) = quiet_load(data, "val"), quiet_load(data, "test")
    assert len(arrays.keys) == 40 and arrays.skipped == 0
    assert len(first) == 1 and "before vlmr stored per-frame hashes" in first[0] and not second
    assert len(load_split_arrays(data, "val", strict=True).keys) == 40  # not a skip: strict goes on
    flip_png(data / "val-000000.tar")
    arrays, msgs = quiet_load(data, "val")
    assert arrays.skipped == 20 and any("val-000000.tar: sha256" in m for m in msgs)


def test_score_cache_is_keyed_on_the_shards_read(data, tiny_goals_model, tmp_path):
    rm = tiny_goals_model(read_manifest(data)["goals"])
    cache = tmp_path / "cache"
    intact = score_split(rm, data, "val", cache_dir=cache, progress=False)
    assert not intact.cached and intact.meta["skipped"] == 0 and len(intact.keys) == 40
    assert score_split(rm, data, "val", cache_dir=cache, progress=False).cached
    data_bytes = (data / "val-000001.tar").read_bytes()
    (data / "val-000001.tar").write_bytes(data_bytes[: len(data_bytes) // 2])  # truncated
    for cached in (False, True):  # damage found before the cache is looked up; the intact scores are not reused
        with pytest.warns(QualityWarning, match="val-000001.tar: sha256"):
            s = score_split(rm, data, "val", cache_dir=cache, progress=False)
        assert s.cached is cached and len(s.keys) == 20 and s.meta["skipped"] == 20
    with pytest.raises(StrictModeError):
        score_split(rm, data, "val", cache_dir=cache, progress=False, strict=True)


def test_cached_sample_problems_are_reported_again(data, tiny_goals_model, tmp_path):
    rm = tiny_goals_model(read_manifest(data)["goals"])
    flip_png(data / "val-000000.tar")
    resign(data, "val-000000.tar")
    for cached in (False, True):
        with pytest.warns(QualityWarning, match="frame_sha256 differs"):
            s = score_split(rm, data, "val", cache_dir=tmp_path, progress=False)
        assert s.cached is cached and s.meta["skipped"] == 1
    with pytest.raises(StrictModeError, match="when these scores were cached"):
        score_split(rm, data, "val", cache_dir=tmp_path, progress=False, strict=True)


def test_verify_gives_a_verdict_per_shard(data, capsys):
    from vlmr.cli import main as vlmr

    assert vlmr(["verify", str(data)]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("ok ") for line in out.splitlines()) == 5 and "5 of 5 shards ok" in out
    flip_png(data / "train-000001.tar")
    key = flip_png(data / "val-000000.tar")
    resign(data, "val-000000.tar")
    assert vlmr(["verify", str(data)]) == 1
    out = capsys.readouterr().out
    assert "FAILED train-000001.tar" in out and "sha256 MISMATCH" in out
    assert "FAILED val-000000.tar" in out and key in out and "3 of 5 shards ok; 2 FAILED (21 samples" in out
    assert vlmr(["verify", str(data), "--quick", "--json"]) == 1  # sha256 only: the re-signed shard passes
    report = json.loads(capsys.readouterr().out)
    assert [v["shard"] for v in report["shards"] if not v["ok"]] == ["train-000001.tar"]
    assert vlmr(["verify", str(data / "nope")]) == 2


def test_score_refuses_a_damaged_shard_in_one_line(data, tmp_path, capsys):
    from vlmr.cli import main as vlmr

    args = ["score", "--arch", "vlmr-tiny", "--goal", "a red circle", "--goal", "a blue square", "--limit", "3"]
    assert vlmr([*args, str(data / "test-000000.tar")]) == 0
    capsys.readouterr()
    flip_png(data / "test-000000.tar")
    assert vlmr([*args, str(data / "test-000000.tar")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "test-000000.tar: sha256" in err and "vlmr verify" in err
    lone = tmp_path / "lone.tar"  # no manifest: frames checked against their hashes, one warning
    lone.write_bytes((data / "train-000000.tar").read_bytes())
    assert vlmr([*args, str(lone)]) == 0
    assert "warning: " in capsys.readouterr().err
    key = flip_png(lone)
    assert vlmr([*args.copy()[:-2], str(lone)]) == 2
    err = capsys.readouterr().err
    assert key in err and "frame_sha256 differs" in err


@pytest.fixture
def tiny_goals_model():
    from vlmr.finetune.reward_model import RewardModel

    def make(goals):
        torch.manual_seed(0)
        return RewardModel.create("vlmr-tiny", goals, negatives=["an empty room"])

    return make


def test_stages_record_what_they_skipped(data, tiny_goals_model, tmp_path):
    from vlmr.calibrate.evaluate import EvaluateConfig, evaluate
    from vlmr.calibrate.fit import CalibrateConfig, calibrate
    from vlmr.finetune.train import finetune

    from vlmr.core.config import build_config
    from vlmr.core.files import read_json

    rm_dir = tiny_goals_model(read_manifest(data)["goals"]).save(tmp_path / "rm")
    flip_png(data / "val-000001.tar")
    flip_png(data / "val-000000.tar")
    resign(data, "val-000000.tar")  # val: one whole shard (20) and one frame (1) left out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrate(CalibrateConfig(reward_model=str(rm_dir), data=str(data), fit_split="val", eval_split="train",
                                  min_positives=1, plots=False, logger="none"), progress=False)
        cal = read_json(rm_dir / "calibration.json")
        assert (cal["fit"]["frames"], cal["fit"]["skipped"]) == (19, 21)
        assert (cal["metrics"]["frames"], cal["metrics"]["skipped"]) == (40, 0)
        res = evaluate(EvaluateConfig(models=[{"dir": str(rm_dir)}], data=str(data), split="val"), progress=False)
        assert (res["data"]["frames"], res["data"]["skipped"], res["models"][0]["skipped"]) == (19, 21, 21)
        cfg = build_config(FinetuneConfig, {
            "name": "ft", "output_dir": str(tmp_path), "data": {"dir": str(data), "batch_size": 8, "shuffle_buffer": 0},
            "model": {"arch": "vlmr-tiny"}, "lora": {"r": 2, "alpha": 4}, "logger": "none",
            "trainer": {"max_steps": 1, "progress_bar": False}}, "test config")
        summary = finetune(cfg, progress=False)
    assert summary["skipped_samples"] == {"train": 0, "val": 21}
    assert read_json(tmp_path / "ft" / "summary.json")["skipped_samples"] == {"train": 0, "val": 21}
    with pytest.raises(StrictModeError, match="val-000001.tar: sha256"):  # the first skip stops it
        calibrate(CalibrateConfig(reward_model=str(rm_dir), data=str(data), fit_split="val", eval_split="train",
                                  min_positives=1, plots=False, logger="none", strict=True, cache_scores=False),
                  progress=False)


def test_pipeline_recollects_a_damaged_dataset(data):
    from vlmr.rl.experiments.pipeline_stages import dataset_valid

    assert dataset_valid(data)
    flip_png(data / "test-000000.tar")
    assert not dataset_valid(data)


def test_data_warnings_print_as_one_line_from_any_command(capsys):
    from vlmr.cli import one_line_data_warnings
    from vlmr.core.integrity import LegacyDatasetWarning

    with one_line_data_warnings():
        warnings.warn("shard x: sha256 differs", QualityWarning, stacklevel=1)
        warnings.warn("dataset y: old shards", LegacyDatasetWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == ["warning: shard x: sha256 differs", "warning: dataset y: old shards"]
