"""Atomic files: the usual permissions, and what a crash between atomic_dir's two renames leaves behind."""

import os

import pytest

from vlmr.core.files import atomic_dir, atomic_write_json, read_json


def test_atomic_write_gives_the_usual_mode_not_mkstemps_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert read_json(path) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_atomic_dir_swaps_in_the_new_dir_and_keeps_the_old_on_error(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "v").write_text("2")
        raise RuntimeError("killed mid-write")
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_restores_the_old_version_after_a_crash_between_its_renames(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    os.replace(target, tmp_path / ".model.old")  # what a crash right after the first rename leaves
    with pytest.raises(RuntimeError), atomic_dir(target):
        raise RuntimeError("the rerun fails too")
    assert (target / "v").read_text() == "1"  # put back before the rerun started
