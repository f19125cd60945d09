"""Shared fixtures: the real-data root (skips cleanly when absent) and small helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_DEFAULT_DATA_ROOT = _HERE.parent.parent / "shared" / "data"


def find_data_root() -> Path | None:
    """The real-data folder: ``$MEDGAN_DATA_ROOT`` or ``../shared/data`` beside the checkout."""
    env = os.environ.get("MEDGAN_DATA_ROOT")
    root = Path(env) if env else _DEFAULT_DATA_ROOT
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real data; tests that use it are skipped when it is absent."""
    root = find_data_root()
    if root is None:
        pytest.skip("real data not found: set MEDGAN_DATA_ROOT or place it at ../shared/data")
    return root


@pytest.fixture(scope="session")
def real_file(data_root):
    """Return a function mapping a path relative to the data root to a Path, skipping if missing."""

    def _get(relative: str) -> Path:
        path = data_root / relative
        if not path.exists():
            pytest.skip(f"real data file missing: {relative}")
        return path

    return _get


def tree_digest(path: Path) -> str:
    """sha256 over every file under ``path`` (names and bytes): proves inputs were not modified."""
    digest = hashlib.sha256()
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent if path.is_file() else path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def dcm2niix_executable() -> str:
    """Path of the ``dcm2niix`` binary (pip package ``dcm2niix``); skips the test when absent."""
    import shutil
    import sys

    beside = Path(sys.executable).parent / "dcm2niix"
    found = str(beside) if beside.exists() else shutil.which("dcm2niix")
    if found is None:
        pytest.skip("dcm2niix (pip package dcm2niix) is not installed")
    return found
