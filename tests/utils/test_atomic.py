"""Atomic outputs: complete or absent, never half-written; usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from medgan.errors import OutputError
from medgan.utils.atomic import atomic_directory, atomic_path


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".medgan-tmp-")]


def test_file_appears_only_when_complete_with_umask_mode(tmp_path):
    target = tmp_path / "out" / "vol.nii.gz"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz")
            tmp.write_bytes(b"data")
            assert not target.exists()
    finally:
        os.umask(old)
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _leftovers(target.parent) == []


def test_failed_write_leaves_nothing_and_keeps_old_file(tmp_path):
    target = tmp_path / "vol.nii"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_disk_full_becomes_output_error(tmp_path):
    target = tmp_path / "vol.nii"
    with pytest.raises(OutputError, match="disk space"):
        with atomic_path(target):
            raise OSError(28, "No space left on device")
    assert not target.exists() and _leftovers(tmp_path) == []


def test_directory_is_renamed_whole_and_refuses_non_empty(tmp_path):
    final = tmp_path / "series"
    with atomic_directory(final) as tmp:
        (tmp / "1.dcm").write_bytes(b"x")
        assert not final.exists()
    assert sorted(p.name for p in final.iterdir()) == ["1.dcm"]
    assert stat.S_IMODE(final.stat().st_mode) & 0o055  # readable by others again, not 0700
    with pytest.raises(OutputError, match="not empty"):
        with atomic_directory(final):
            pass
    assert _leftovers(tmp_path) == []
