"""Domain errors. Each one names the file, what is wrong and how to fix it.

The CLI prints ``str(error)`` without a traceback (unless ``--debug``) and exits non-zero, so the
message must stand on its own for a hospital user.
"""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


class MedganError(Exception):
    """Base class of every error medgan raises on bad input or failed processing.

    Args:
        problem: what is wrong, in one sentence.
        path: the file or folder concerned, if any.
        fix: what the user can do about it.
    """

    exit_code: int = 2

    def __init__(self, problem: str, path: Optional[PathLike] = None, fix: Optional[str] = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}: {self.problem}")
        else:
            parts.append(self.problem)
        if self.fix:
            parts.append(f"Fix: {self.fix}")
        return "\n".join(parts)


class DicomSeriesError(MedganError):
    """A DICOM file or series cannot be turned into a correct volume."""


class ImageFileError(MedganError):
    """An image file (NIfTI or other) is unreadable or holds invalid data."""


class ManifestError(MedganError):
    """A data manifest is malformed or points at unusable data."""


class GeometryMismatchError(MedganError):
    """Two images that must share a physical space do not."""


class RegistrationError(MedganError):
    """A registration failed its quality control; the moving image is NOT aligned."""


class SimulationError(MedganError):
    """A degradation simulator was given input it cannot model."""


class BundleError(MedganError):
    """A bundle is missing files, fails its checks, or refuses an input."""


class OutputError(MedganError):
    """An output could not be written (permissions, disk full, existing file)."""
