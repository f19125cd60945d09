"""Provenance of a synthetic output: the JSON sidecar record and the NIfTI description.

Every volume a bundle writes says it is synthetic and where it came from: the NIfTI ``descrip``
field holds :func:`nifti_description` (``"SYNTHETIC medgan <bundle> v<version>"``, at most 80 bytes)
and the case's JSON sidecar holds :func:`build_provenance`'s record (bundle name and version, weights
sha256, every input path with its sha256, parameters, library versions, device, timing, an ISO 8601
UTC timestamp and ``"synthetic": true``). The sidecar layout is documented in ``docs/results_layout.md``.

Nothing here imports torch: versions are read from the installed package metadata.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from medgan.errors import ImageFileError
from medgan.utils.atomic import sha256_file

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["DESCRIP_BYTES", "SIDECAR_SCHEMA_VERSION", "build_provenance", "library_versions",
           "nifti_description", "sha256_input", "write_sidecar"]

#: The NIfTI-1 ``descrip`` field holds at most this many bytes.
DESCRIP_BYTES = 80
#: Version of the sidecar layout (``schema`` key of every sidecar).
SIDECAR_SCHEMA_VERSION = "1"
_DESCRIP_PREFIX = "SYNTHETIC medgan"
_LIBRARIES = ("medgan", "monai", "torch", "numpy")


def nifti_description(bundle_name: str, bundle_version: str) -> str:
    """The NIfTI ``descrip`` text of a synthetic output: ``"SYNTHETIC medgan <bundle> v<version>"``.

    The text is ASCII and at most :data:`DESCRIP_BYTES` bytes; a long bundle name is shortened (ending
    in ``~``) so the version always fits.

    Args:
        bundle_name: e.g. ``ct_lowdose_denoising``.
        bundle_version: e.g. ``0.1.0``.
    """
    name = bundle_name.encode("ascii", "replace").decode("ascii")
    version = f" v{bundle_version}".encode("ascii", "replace").decode("ascii")
    room = DESCRIP_BYTES - len(_DESCRIP_PREFIX) - 1 - len(version)
    if room < 8:
        raise ValueError(f"bundle version {bundle_version!r} is too long for the 80-byte NIfTI description")
    if len(name) > room:
        name = name[:room - 1] + "~"
    return f"{_DESCRIP_PREFIX} {name}{version}"


def sha256_input(path: PathLike) -> str:
    """sha256 of an input: the file's bytes, or for a folder (a DICOM series) of every file under it.

    A folder's digest covers each file's path relative to the folder and its sha256, in sorted order,
    so renaming, adding or changing any file changes it.

    Raises:
        ImageFileError: the path does not exist or a folder holds no file.
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise ImageFileError("no such file or folder", path, "check the input path")
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise ImageFileError("the input folder holds no file", path, "point at the DICOM series folder")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        digest.update(sha256_file(file).encode("ascii") + b"\n")
    return digest.hexdigest()


def library_versions() -> Dict[str, Optional[str]]:
    """Installed versions of medgan, MONAI, torch and numpy (None when one is not installed), and Python."""
    versions: Dict[str, Optional[str]] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples to JSON types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def build_provenance(
    bundle_name: str,
    bundle_version: str,
    weights_sha256: str,
    inputs: Sequence[PathLike],
    case_id: Optional[str] = None,
    parameters: Optional[Mapping[str, Any]] = None,
    device: Optional[str] = None,
    timing_s: Optional[Mapping[str, float]] = None,
    outputs: Optional[Mapping[str, PathLike]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    created: Optional[datetime.datetime] = None,
) -> Dict[str, Any]:
    """The provenance record of one synthetic output (the body of its JSON sidecar).

    Args:
        bundle_name: the bundle's name.
        bundle_version: its ``metadata.json`` version.
        weights_sha256: sha256 of the weights that made the output.
        inputs: input files or DICOM folders; each is hashed with :func:`sha256_input`.
        case_id: the case's identifier (manifest ``case_id``).
        parameters: inference parameters (overlap, window size, forced input flags...).
        device: the device that ran the model, e.g. ``cpu`` or ``cuda:0``.
        timing_s: durations in seconds, e.g. ``{"load": 1.2, "inference": 30.5, "write": 0.8}``.
        outputs: output kind -> path relative to the case folder (``pred``, ``uncertainty``, ``dicom``).
        extra: further top-level sections (``input_check``, ``uncertainty``, ``lesions``; see
            ``docs/results_layout.md``); they may not replace the keys set here.
        created: the timestamp (default: now, UTC).

    Returns:
        a JSON-serialisable dict with ``"synthetic": True``.

    Raises:
        ValueError: ``extra`` would overwrite a provenance key.
    """
    created = created or datetime.datetime.now(datetime.timezone.utc)
    record: Dict[str, Any] = {
        "schema": SIDECAR_SCHEMA_VERSION,
        "synthetic": True,
        "case_id": case_id,
        "description": nifti_description(bundle_name, bundle_version),
        "bundle": {"name": bundle_name, "version": bundle_version, "weights_sha256": weights_sha256},
        "inputs": [{"path": os.fspath(p), "sha256": sha256_input(p)} for p in inputs],
        "parameters": _plain(dict(parameters or {})),
        "versions": library_versions(),
        "device": device,
        "timing_s": _plain(dict(timing_s or {})),
        "outputs": _plain(dict(outputs or {})),
        "created": created.isoformat(timespec="seconds"),
    }
    clash = sorted(set(extra or {}) & set(record))
    if clash:
        raise ValueError(f"extra sections would overwrite provenance keys: {', '.join(clash)}")
    record.update(_plain(dict(extra or {})))
    return record


def write_sidecar(record: Mapping[str, Any], path: PathLike) -> Path:
    """Write a sidecar JSON atomically (non-finite floats become ``null`` / ``"inf"``).

    Args:
        record: e.g. :func:`build_provenance`'s result.
        path: destination ``.json``.
    """
    from medgan.metrics.evaluation import write_json

    return write_json(_plain(dict(record)), path)
