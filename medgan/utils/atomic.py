"""Atomic outputs: nothing half-written survives an error or a kill.

A file is written under a temporary name in the destination folder and renamed over the final
name only when complete (``os.replace`` is atomic on one file system). A DICOM series is written
into a temporary folder that is renamed when every file is in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from medgan.errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]

_TMP_PREFIX = ".medgan-tmp-"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _apply_default_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private entries (0600/0700): give outputs the usual umask-based mode."""
    base = 0o777 if directory else 0o666
    with contextlib.suppress(OSError):
        os.chmod(path, base & ~_umask())


def _check_writable_parent(final: Path) -> None:
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the output folder ({err.strerror})", parent,
                          "choose an output folder you can write to") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("the output folder is not writable", parent,
                          "choose an output folder you can write to, or fix its permissions")


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz`` stays ``.nii.gz``) so writers that
    choose a format by extension behave. On any exception the temporary file is removed.

    Args:
        path: the final file name.
        overwrite: when False an existing ``path`` raises :class:`OutputError` before anything is written.
    """
    final = Path(path)
    _check_writable_parent(final)
    if final.exists() and not overwrite:
        raise OutputError("output file exists already", final, "remove it or pass overwrite")
    suffix = "".join(final.suffixes) if final.suffixes else ""
    fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OutputError("the writer produced no data", final, "see the error above; nothing was written")
        _apply_default_mode(tmp, directory=False)
        os.replace(tmp, final)
    except OSError as err:
        _silent_unlink(tmp)
        raise OutputError(f"writing failed ({err.strerror or err})", final,
                          "check free disk space and permissions; no partial file was left") from err
    except BaseException:
        _silent_unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` when the block succeeds.

    Args:
        path: the final folder.
        overwrite: replace an existing folder (it is removed only after the new one is complete).
    """
    final = Path(path)
    _check_writable_parent(final)
    if final.exists() and not overwrite and any(final.iterdir()):
        raise OutputError("output folder exists and is not empty", final,
                          "choose a new folder or remove this one")
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=final.parent))
    try:
        yield tmp
        _apply_default_mode(tmp, directory=True)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=final.parent))
            os.replace(final, trash / "old")
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"writing failed ({err.strerror or err})", final,
                          "check free disk space and permissions; no partial output was left") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _silent_unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def sha256_file(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()
