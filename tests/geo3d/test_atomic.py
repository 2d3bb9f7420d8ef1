"""Atomic writers: all or nothing, normal permissions."""

from __future__ import annotations

import os
import stat

import pytest

from geo3d.io.atomic import atomic_open, atomic_path, atomic_write_text


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_keeps_suffix_and_umask_mode(tmp_path):
    with atomic_path(tmp_path / "sub" / "mesh.ply") as tmp:
        assert tmp.suffix == ".ply" and tmp.parent == tmp_path / "sub"
        tmp.write_text("ply")
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE((tmp_path / "sub" / "mesh.ply").stat().st_mode)
    assert mode == 0o666 & ~mask


def test_atomic_open_rejects_read_mode(tmp_path):
    with pytest.raises(ValueError, match="write mode"):
        with atomic_open(tmp_path / "x", "r"):
            pass
