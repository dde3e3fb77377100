"""Collection mechanics: split separation, resume, corrupt data, strict mode, workers, config errors."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import warnings

import numpy as np
import pytest
from vlmr.finetune.datamodule import ShardDataModule
from vlmr.rl.collect.collect import CollectConfig, SplitFrames, collect, main

from vlmr.core.dataset import iter_split, load_split_arrays, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json, sha256_file


def shapes_cfg(out, **kw) -> CollectConfig:
    base = dict(name="t", source="shapes", out_dir=str(out), frames=SplitFrames(train=60, val=20, test=20),
                shard_size=20)
    return CollectConfig(**{**base, **kw})


def keys(out, split):
    return [s["key"] for s in iter_split(out, split)]


def test_splits_share_no_env_seed_or_layout(babyai_dataset):
    from vlmr.rl.envs.babyai import make_env

    seeds = {}
    for split in ("train", "val", "test"):
        seeds[split] = {s["meta"]["env_seed"] for s in iter_split(babyai_dataset, split)}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["train"] & seeds["test"])
    assert not (seeds["val"] & seeds["test"])
    env = make_env("BabyAI-GoToLocal-v0")

    def layouts(split):
        out = set()
        for seed in sorted(seeds[split])[:40]:
            env.reset(seed=seed)
            u = env.unwrapped
            out.add(hashlib.sha1(u.grid.encode().tobytes() + bytes(u.agent_pos)).hexdigest())
        return out

    assert not (layouts("train") & layouts("val")) and not (layouts("train") & layouts("test"))


def test_killed_collection_resumes_without_duplicates(tmp_path):
    fresh = collect(shapes_cfg(tmp_path / "fresh"), progress=False)
    out = tmp_path / "killed"
    cfg = shapes_cfg(out)
    collect(cfg, progress=False, stop_after=2)  # "killed" after two shards
    assert not (out / "manifest.json").exists()
    (out / ".train-000002.tar.tmp").write_bytes(b"half a shard")  # what a kill mid-shard leaves
    with pytest.raises(VlmrError, match="incomplete"):
        read_manifest(out)
    with pytest.raises(VlmrError, match="--resume"):
        collect(cfg, progress=False)
    collect(cfg, resume=True, progress=False)
    assert not list(out.glob(".*.tmp"))
    for split in ("train", "val", "test"):
        k = keys(out, split)
        assert len(k) == len(set(k)) == read_manifest(out)["splits"][split]["samples"]
        assert k == keys(fresh, split)
    # same content as an uninterrupted run, shard by shard
    a, b = read_manifest(out), read_manifest(fresh)
    assert [s["sha256"] for s in a["splits"]["train"]["shards"]] == [s["sha256"] for s in b["splits"]["train"]["shards"]]


def test_resume_rejects_a_different_config(tmp_path):
    collect(shapes_cfg(tmp_path / "d"), progress=False, stop_after=1)
    with pytest.raises(VlmrError, match="different config"):
        collect(shapes_cfg(tmp_path / "d", seed=5), resume=True, progress=False)


def test_existing_dataset_needs_resume_or_overwrite(tmp_path):
    cfg = shapes_cfg(tmp_path / "d")
    collect(cfg, progress=False)
    with pytest.raises(VlmrError, match="already exists and is complete"):
        collect(cfg, progress=False)
    cfg.overwrite = True
    collect(cfg, progress=False)
    assert read_manifest(tmp_path / "d")["splits"]["train"]["samples"] == 60


def test_overwrite_with_resume_keeps_matching_shards(tmp_path):
    out = tmp_path / "d"
    collect(shapes_cfg(out, overwrite=True), progress=False, stop_after=2)
    first = (out / "train-000000.tar").stat().st_mtime_ns
    collect(shapes_cfg(out, overwrite=True), resume=True, progress=False)  # same config: continued
    assert (out / "train-000000.tar").stat().st_mtime_ns == first
    # a re-collection that changes no shard keeps the manifest file, so stages keyed on its sha256 stay valid
    manifest_sha = sha256_file(out / "manifest.json")
    collect(shapes_cfg(out, overwrite=True, strict=True), resume=True, progress=False)
    assert sha256_file(out / "manifest.json") == manifest_sha
    # a run interrupted between setting the manifest aside and writing the new one still writes it back
    aside = out / ".progress" / "manifest.previous"
    (out / "manifest.json").rename(aside)
    collect(shapes_cfg(out, overwrite=True), resume=True, progress=False)
    assert sha256_file(out / "manifest.json") == manifest_sha and not aside.exists()
    collect(shapes_cfg(out, overwrite=True, seed=9), resume=True, progress=False)  # other config: replaced
    assert read_manifest(out)["config"]["seed"] == 9 and len(keys(out, "train")) == 60


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def test_corrupt_shard_is_skipped_and_counted_or_strict_error(tmp_path):
    out = collect(shapes_cfg(tmp_path / "d"), progress=False)
    _truncate(out / "train-000001.tar")
    with pytest.warns(UserWarning, match="train-000001.tar: sha256.*skipping its 20 samples"):
        arrays = load_split_arrays(out, "train")
    assert arrays.skipped == 20 and len(arrays.keys) == 40  # the whole shard: none of its samples is trusted
    dm = ShardDataModule(out, batch_size=8)
    with pytest.warns(UserWarning, match="train-000001.tar: sha256"):
        n = sum(len(b["keys"]) for b in dm.train_dataloader())
    assert n == len(arrays.keys) and dm.skipped_by_split == {"train": 20}
    with pytest.raises(VlmrError, match="train-000001.tar: sha256"):
        ShardDataModule(out, batch_size=8, strict=True).train_dataloader()
    # resume: a complete shard that no longer matches its record is rewritten, or an error with --strict
    with pytest.raises(VlmrError, match="does not match"):
        collect(dataclasses.replace(shapes_cfg(tmp_path / "d"), strict=True), resume=True, progress=False)
    with pytest.warns(UserWarning, match="rewriting it"):
        collect(shapes_cfg(tmp_path / "d"), resume=True, progress=False)
    assert len(load_split_arrays(out, "train", strict=True).keys) == 60


def test_bad_png_is_skipped(tmp_path):
    import webdataset as wds

    from vlmr.core.files import atomic_write_json, sha256_file

    out = collect(shapes_cfg(tmp_path / "d"), progress=False)
    shard = out / "test-000000.tar"
    samples = list(wds.WebDataset(str(shard), shardshuffle=False, empty_check=False))
    samples[3]["frame.png"] = b"\x89PNG not really"
    with wds.TarWriter(str(shard)) as w:
        for s in samples:
            w.write({k: v for k, v in s.items() if k in ("__key__", "frame.png", "meta.json")})
    manifest = read_manifest(out)  # re-signed, so the shard is read and the one bad sample is what is skipped
    manifest["splits"]["test"]["shards"][0]["sha256"] = sha256_file(shard)
    atomic_write_json(out / "manifest.json", manifest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arrays = load_split_arrays(out, "test")
    assert arrays.skipped == 1 and len(arrays.keys) == 19 and caught
    with pytest.raises(VlmrError, match="corrupt"):
        load_split_arrays(out, "test", strict=True)


def test_workers_give_the_same_shards(tmp_path):
    one = collect(shapes_cfg(tmp_path / "one"), progress=False)
    two = collect(shapes_cfg(tmp_path / "two"), workers=2, progress=False)
    sha = lambda d: [s["sha256"] for sp in read_manifest(d)["splits"].values() for s in sp["shards"]]  # noqa: E731
    assert sha(one) == sha(two)


def test_negative_keep_balances(tmp_path):
    def own_rate(out):
        a = load_split_arrays(out, "train")
        return a.labels[np.arange(len(a.own_goal)), a.own_goal].mean()

    base = dict(source="babyai", env_id="BabyAI-GoToLocal-v0", frames=SplitFrames(train=150, val=10, test=10),
                shard_size=150)
    full = collect(shapes_cfg(tmp_path / "full", **base), progress=False)
    bal = collect(shapes_cfg(tmp_path / "bal", negative_keep=0.2, **base), progress=False)
    assert own_rate(bal) > own_rate(full) + 0.15


def test_cli_errors_name_what_exists(tmp_path, capsys):
    from vlmr.cli import main as vlmr

    assert vlmr(["collect", "--source", "shapes", f"out_dir={tmp_path}/x", "source=gridworld", "--quiet"]) == 2
    assert "sources are shapes, babyai, crafter" in capsys.readouterr().err
    assert vlmr(["collect", "--source", "babyai_goto", f"out_dir={tmp_path}/x", "env_id=BabyAI-Foo-v0"]) == 2
    assert "BabyAI-GoToLocal-v0" in capsys.readouterr().err
    assert vlmr(["collect", "--source", "nope"]) == 2
    assert "babyai_goto" in capsys.readouterr().err
    assert vlmr(["collect", "--source", "shapes", "goals=[a pink circle]", f"out_dir={tmp_path}/x"]) == 2
    assert "unknown shapes goals" in capsys.readouterr().err
    assert vlmr(["collect", "--source", "shapes", "frames.trian=3", f"out_dir={tmp_path}/x"]) == 2
    assert "trian" in capsys.readouterr().err


def test_every_config_loads():
    from pathlib import Path

    from vlmr.core.config import load_config

    root = Path(__file__).resolve().parent.parent / "configs" / "data"
    names = sorted(p.stem for p in root.glob("*.yaml"))
    assert {"shapes", "babyai_goto", "babyai_pickup", "crafter"} <= set(names)
    for p in root.glob("*.yaml"):
        cfg = load_config(CollectConfig, p)
        assert cfg.frames.train + cfg.frames.val + cfg.frames.test <= 20000  # sized for the 2-core offline demo


def test_progress_record_matches_manifest(tmp_path):
    out = collect(shapes_cfg(tmp_path / "d"), progress=False)
    rec = read_json(out / ".progress" / "train-000001.json")
    entry = read_manifest(out)["splits"]["train"]["shards"][1]
    assert rec["sha256"] == entry["sha256"] and rec["samples"] == entry["samples"] == 20
    shutil.rmtree(out / ".progress")  # readers never need it
    assert len(load_split_arrays(out, "train").keys) == 60


def test_main_writes_the_dataset_its_arguments_describe(tmp_path, capsys):
    from vlmr.rl.envs.shapes import goal_set

    from vlmr.cli import main as vlmr

    out = tmp_path / "cli"
    args = ["--source", "shapes", f"out_dir={out}", "frames.train=30", "frames.val=10", "frames.test=10",
            "shard_size=20", "seed=3"]
    assert main([*args, "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.tar")) == ["test-000000.tar", "train-000000.tar", "train-000001.tar",
                                                        "val-000000.tar"]
    m = read_manifest(out)
    assert m["source"] == "shapes" and m["goals"] == goal_set() and m["config"]["seed"] == 3
    assert [m["splits"][s]["samples"] for s in ("train", "val", "test")] == [30, 10, 10]
    assert capsys.readouterr().out == ""  # --quiet
    assert main([*args, "--resume"]) == 0  # nothing left to do, and the report says so
    assert "0 new" in capsys.readouterr().out
    with pytest.raises(VlmrError, match="looks like an override"):
        main([f"out_dir={out}"])
    assert vlmr(["collect", *args, "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err


@pytest.mark.slow  # a real SIGKILL of a `vlmr collect` process: ~10 s of process start-up and collection
def test_sigkill_then_resume(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "k"
    args = [sys.executable, "-m", "vlmr.cli", "collect", "--source", "babyai_goto", f"out_dir={out}",
            "frames.train=3000", "frames.val=200", "frames.test=200", "shard_size=200", "--quiet"]
    proc = subprocess.Popen(args)
    deadline = time.time() + 60
    while len(list(out.glob("train-*.tar"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    subprocess.run([*args, "--resume"], check=True)
    m = read_manifest(out)
    for split, n in (("train", 3000), ("val", 200), ("test", 200)):
        k = keys(out, split)
        assert len(k) == len(set(k)) == m["splits"][split]["samples"] == n


def coverage_cfg(out, **kw) -> CollectConfig:
    base = dict(name="cov", source="babyai", env_id="BabyAI-GoToObj-v0", out_dir=str(out), image_size=64,
                frames=SplitFrames(train=60, val=60, test=60), shard_size=30, min_positives_per_split=4,
                max_topup_ratio=10.0)
    return CollectConfig(**{**base, **kw})


def test_top_ups_give_every_goal_its_positives_in_every_split_and_resume_exactly(tmp_path, capsys):
    from vlmr.rl.envs.babyai import goal_set

    out = collect(coverage_cfg(tmp_path / "d"), progress=True)
    m = read_manifest(out)
    new = sum(e["samples"] for e in m["splits"].values())
    assert f"; {new} new in " in capsys.readouterr().out and new > 180  # the report counts the top-ups too
    assert m["goals"] == goal_set("BabyAI-GoToObj-v0") and m["dropped_goals"] == {}
    for split, entry in m["splits"].items():
        assert len(entry["shards"]) > 2  # the 2 planned shards could not cover 18 goals: top-ups did
        assert min(entry["positives"].get(g, 0) for g in m["goals"]) >= 4, split
    arrays = load_split_arrays(out, "val", goals=m["goals"])
    assert (arrays.labels.sum(0) >= 4).all()  # the counts are the frames' own labels
    seeds = {s: {x["meta"]["env_seed"] for x in iter_split(out, s)} for s in ("train", "val", "test")}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["val"] & seeds["test"])
    # a rerun keeps every shard, top-ups included; fewer top-ups drop the stale ones
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    collect(coverage_cfg(tmp_path / "d"), resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before
    # a minimum for val alone (what calibration's guarantee needs): val keeps its top-ups, the other splits lose theirs
    collect(coverage_cfg(tmp_path / "d", min_positives_per_split={"val": 4}), resume=True, progress=False)
    shards = {s: sorted(p.name for p in out.glob(f"{s}-*.tar")) for s in ("train", "val", "test")}
    assert len(shards["train"]) == len(shards["test"]) == 2 and len(shards["val"]) > 2
    assert all(before[name] == (out / name).read_bytes() for name in shards["val"])
    with pytest.raises(VlmrError, match=r"min_positives_per_split names \['vall'\]; its keys are the splits"):
        collect(coverage_cfg(tmp_path / "e", min_positives_per_split={"vall": 4}), progress=False)
    collect(coverage_cfg(tmp_path / "d", min_positives_per_split=0), resume=True, progress=False)
    assert sorted(p.name for p in out.glob("*.tar")) == [f"{s}-00000{i}.tar" for s in ("test", "train", "val")
                                                         for i in (0, 1)]


def test_a_goal_that_cannot_be_covered_is_dropped_or_stops_strict_collection(tmp_path):
    cfg = coverage_cfg(tmp_path / "d", max_topup_ratio=6.0)  # about half the goals get covered
    with pytest.warns(UserWarning, match=r"goal\(s\) dropped from the goal set"):
        out = collect(cfg, progress=False)
    m = read_manifest(out)
    assert m["dropped_goals"] and not set(m["dropped_goals"]) & set(m["goals"])
    assert all(re.search(r"< 4 .*\(min_positives_per_split\)", why) for why in m["dropped_goals"].values())
    with pytest.raises(VlmrError, match="dropped from the goal set"):
        collect(dataclasses.replace(cfg, strict=True, overwrite=True), progress=False)
    with pytest.raises(VlmrError, match="no goal reaches min_positives_per_split=500"):
        collect(dataclasses.replace(cfg, min_positives_per_split=500, overwrite=True), progress=False)
