"""`vlmr verify DATASET`: check every shard of a dataset and give a verdict per shard.

    vlmr verify data/babyai_goto              # sha256 against the manifest, then every sample decoded and checked
    vlmr verify data/babyai_goto --quick      # sha256 only (what every reader checks before streaming a shard)
    vlmr verify data/babyai_goto/val-000000.tar --json

A shard passes when its file's sha256 matches the manifest, every sample decodes, every frame's pixels
match its frame_sha256 and it holds the manifest's sample count. Exit status 0 when every shard passes,
1 when any fails. A lone .tar is checked against a manifest.json beside it that lists it; without one,
only its frames can be checked (against their frame_sha256), which the verdict says.

From Python: `verify_dataset(path)` -> a list of per-shard verdicts (dicts); `shard_frames(path)` streams a
lone shard for `vlmr score`, raising a one-line VlmrError on any damage.

Tests: `.venv/bin/python -m pytest tests/test_integrity.py -q`
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from vlmr.core.dataset import MANIFEST_FILE, decode_sample, read_manifest
from vlmr.core.errors import VlmrError
from vlmr.core.files import read_json
from vlmr.core.integrity import shard_problem


def _stream(path: Path, require_hash: bool, problems: list[str]) -> Iterator[dict]:
    """Decoded, frame-checked samples of one shard; damage is appended to `problems`, not raised."""
    import webdataset as wds

    def handler(exn):
        problems.append(f"unreadable: {type(exn).__name__}: {str(exn)[:200]}")
        return True

    for raw in wds.WebDataset(str(path), shardshuffle=False, handler=handler, empty_check=False):
        try:
            yield decode_sample(raw, require_hash)
        except Exception as e:  # noqa: BLE001 - a damaged sample is what we are looking for
            problems.append(str(e))


def verify_shard(path: Path, entry: dict | None, split: str | None = None, decode: bool = True) -> dict:
    """The verdict on one shard; `entry` is its manifest entry (None: a lone shard without a manifest)."""
    problems, read = [], None
    sha = "not checked (no manifest lists this shard)" if entry is None else "ok"
    if entry is not None and (problem := shard_problem(path, entry)) is not None:
        problems.append(problem)
        sha = "missing" if not path.is_file() else "MISMATCH"
    hashed = bool(entry and entry.get("frame_hashes"))
    frames = "not checked (--quick)"
    if decode and path.is_file():
        read, with_hash, frame_problems = 0, 0, []
        for sample in _stream(path, hashed, frame_problems):
            read += 1
            with_hash += "frame_sha256" in sample["meta"]
        problems += frame_problems
        want = entry.get("samples") if entry else None
        if want is not None and read + len(frame_problems) < int(want):
            problems.append(f"{read} of {want} samples readable (truncated)")
        frames = (f"{len(frame_problems)} damaged" if frame_problems else
                  "ok" if with_hash == read else "not checked (written before vlmr stored frame hashes)")
    return {"split": split, "shard": path.name, "path": str(path), "ok": not problems, "sha256": sha,
            "frames": frames, "samples_expected": entry.get("samples") if entry else None, "samples_read": read,
            "problems": problems}


def _lone_entry(path: Path) -> tuple[str | None, dict | None]:
    """(split, manifest entry) of a shard file from the manifest.json beside it, when one lists it."""
    manifest_path = path.parent / MANIFEST_FILE
    if not manifest_path.is_file():
        return None, None
    manifest = read_json(manifest_path, "dataset manifest")
    for split, s in (manifest.get("splits") or {}).items():
        for entry in s.get("shards", []):
            if entry.get("name") == path.name:
                return split, entry
    return None, None


def verify_dataset(path: str | Path, decode: bool = True) -> list[dict]:
    """Per-shard verdicts of a dataset folder (or of one .tar file)."""
    path = Path(path)
    if path.is_file():
        split, entry = _lone_entry(path)
        return [verify_shard(path, entry, split, decode)]
    manifest = read_manifest(path)
    return [verify_shard(path / e["name"], e, split, decode)
            for split, s in manifest["splits"].items() for e in s.get("shards", [])]


def shard_frames(path: Path) -> Iterator[tuple[str, object]]:
    """(key, frame) of a lone shard for `vlmr score`: its sha256 is checked against a manifest.json beside it that
    lists it, and every frame against its frame_sha256; any damage is a one-line VlmrError (no partial scores)."""
    import warnings

    _, entry = _lone_entry(path)
    if entry is not None and (problem := shard_problem(path, entry)) is not None:
        raise VlmrError(f"{problem}; `vlmr verify {path.parent}` checks the dataset")
    if entry is None:
        warnings.warn(f"{path}: no manifest.json beside it lists this shard, so its sha256 and sample count cannot be "
                      "checked; its frames are checked against their stored frame hashes", stacklevel=2)
    problems: list[str] = []
    for sample in _stream(path, bool(entry and entry.get("frame_hashes")), problems):
        if problems:
            break
        yield sample["key"], sample["frame"]
    if problems:
        raise VlmrError(f"shard {path} is damaged: {problems[0]}; `vlmr verify {path}` lists every problem")


def verify_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmr verify", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("dataset", help="dataset folder (manifest.json + shards) or one .tar shard")
    parser.add_argument("--quick", action="store_true", help="sha256 only: do not decode and check every frame")
    parser.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    args = parser.parse_args(argv)
    path = Path(args.dataset)
    if not path.exists():
        raise VlmrError(f"{path} does not exist; give a dataset folder written by `vlmr collect` or a .tar shard")
    verdicts = verify_dataset(path, decode=not args.quick)
    failed = [v for v in verdicts if not v["ok"]]
    if args.json:
        print(json.dumps({"dataset": str(path), "ok": not failed, "shards": verdicts}, indent=2))
        return 1 if failed else 0
    for v in verdicts:
        read = "" if v["samples_read"] is None else f"{v['samples_read']}/{v['samples_expected'] or '?'} samples, "
        print(f"{'ok    ' if v['ok'] else 'FAILED'} {v['shard']:<20} {read}sha256 {v['sha256']}, frames {v['frames']}")
        for problem in v["problems"][:5]:
            print(f"       - {problem}")
        if len(v["problems"]) > 5:
            print(f"       - ... and {len(v['problems']) - 5} more")
    # readers skip a whole shard whose sha256 differs, else only its damaged samples
    lost = sum(int(v["samples_expected"] or 0) if v["sha256"] != "ok" else len(v["problems"]) for v in failed)
    print(f"vlmr verify {path}: {len(verdicts) - len(failed)} of {len(verdicts)} shards ok"
          + (f"; {len(failed)} FAILED ({lost} sample{'s' * (lost != 1)} that readers skip). `vlmr collect CONFIG "
             "--resume` rewrites damaged shards" if failed else ""))
    return 1 if failed else 0
