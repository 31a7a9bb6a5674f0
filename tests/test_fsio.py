"""Atomic writes: complete files or nothing, never a temporary left behind."""

from __future__ import annotations

import json
import os

import pytest

from crossview.fsio import atomic_path, atomic_write_bytes, atomic_write_json


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "map.tif"
    target.write_bytes(b"complete")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["map.tif"]


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "tile.png", b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
