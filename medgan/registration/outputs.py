"""Register two image files and write the results: image, transform, QC record and QC picture.

Nothing is written unless the registration passes QC; the four files are first written under
temporary names and renamed together at the end, so a failure leaves no output behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Union

import numpy as np
import SimpleITK as sitk

from medgan.errors import OutputError
from medgan.registration._sitk import read_image
from medgan.registration.figures import save_registration_figure
from medgan.registration.register import ImageRegistration, RegistrationResult
from medgan.utils.atomic import atomic_path

PathLike = Union[str, "os.PathLike[str]"]
logger = logging.getLogger(__name__)

REGISTERED_NAME = "registered.nii.gz"
TRANSFORM_NAME = "transform.tfm"
QC_JSON_NAME = "qc.json"
QC_PNG_NAME = "qc.png"


def register_files(fixed_path: PathLike, moving_path: PathLike, out_dir: PathLike,
                   registration: ImageRegistration | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Register ``moving_path`` onto ``fixed_path`` and write the outputs into ``out_dir``.

    Writes ``registered.nii.gz`` (the moving image on the fixed grid, in the moving file's pixel type),
    ``transform.tfm`` (ITK transform mapping fixed to moving physical points, LPS mm; load it with
    ``SimpleITK.ReadTransform`` or 3D Slicer), ``qc.json`` and ``qc.png``.

    Args:
        fixed_path: the reference image (NIfTI/NRRD/MHA file or DICOM folder); its grid is the output grid.
        moving_path: the image to align.
        out_dir: output folder (created if missing).
        registration: the configured registration; ``ImageRegistration()`` (rigid, Mattes MI) if None.
        overwrite: replace existing output files of the same names.

    Returns:
        the written paths by kind: ``registered``, ``transform``, ``qc_json``, ``qc_png``.

    Raises:
        RegistrationError: QC failed (nothing is written).
        ImageFileError: an input is unreadable.
        OutputError: an output exists (without ``overwrite``) or cannot be written.
    """
    registration = registration or ImageRegistration()
    out_dir = Path(out_dir)
    paths = {"registered": out_dir / REGISTERED_NAME, "transform": out_dir / TRANSFORM_NAME,
             "qc_json": out_dir / QC_JSON_NAME, "qc_png": out_dir / QC_PNG_NAME}
    if not overwrite:
        existing = [p for p in paths.values() if p.exists()]
        if existing:
            raise OutputError("output files exist already", existing[0], "choose another folder or pass --overwrite")
    fixed = read_image(fixed_path)
    moving = read_image(moving_path)
    result = registration(fixed, moving, name=os.fspath(moving_path))
    record = qc_record(result, registration, fixed_path, moving_path)

    with contextlib.ExitStack() as stack:  # all four are renamed into place only if every write succeeds
        temporary = {kind: stack.enter_context(atomic_path(path, overwrite=overwrite)) for kind, path in paths.items()}
        sitk.WriteImage(_cast_like_file(result.registered, moving_path), os.fspath(temporary["registered"]),
                        useCompression=True)
        sitk.WriteTransform(result.transform, os.fspath(temporary["transform"]))
        temporary["qc_json"].write_text(json.dumps(record, indent=2) + "\n")
        save_registration_figure(fixed, result.registered, temporary["qc_png"], title=_title(result, moving_path))
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def qc_record(result: RegistrationResult, registration: ImageRegistration, fixed_path: PathLike,
              moving_path: PathLike) -> dict:
    """The JSON-ready QC record: inputs, settings, QC figures and the output names."""
    from medgan import __version__

    return {
        "medgan_version": __version__,
        "fixed": os.fspath(fixed_path),
        "moving": os.fspath(moving_path),
        "settings": {k: (str(v) if hasattr(v, "value") else v) for k, v in vars(registration).items()},
        "transform_convention": "maps fixed-image physical points (LPS mm) to moving-image points",
        "transform_type": result.transform.GetName(),
        "qc": result.qc.to_dict(),
        "outputs": {"registered": REGISTERED_NAME, "transform": TRANSFORM_NAME, "figure": QC_PNG_NAME},
    }


def _cast_like_file(image: sitk.Image, source: PathLike) -> sitk.Image:
    """Cast to the pixel type of the source file when it is an integer type (rounded, clipped)."""
    path = Path(source)
    if path.is_dir():
        return image
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    reader.ReadImageInformation()
    pixel = reader.GetPixelID()
    if pixel in (sitk.sitkFloat32, sitk.sitkFloat64) or reader.GetNumberOfComponents() != 1:
        return image
    info = np.iinfo(sitk.GetArrayViewFromImage(sitk.Image(1, 1, 1, pixel)).dtype)
    clamped = sitk.Clamp(sitk.Round(image), sitk.sitkFloat32, float(info.min), float(info.max))
    return sitk.Cast(clamped, pixel)


def _title(result: RegistrationResult, moving_path: PathLike) -> str:
    qc = result.qc
    text = (f"{Path(moving_path).name} -> fixed grid, {qc.mode}, {qc.metric}: metric {qc.metric_before} -> "
            f"{qc.metric_after}, body-mask Dice {qc.mask_dice_before:.3f} -> {qc.mask_dice_after:.3f}")
    if qc.jacobian_min is not None:
        text += f", Jacobian {qc.jacobian_min:.2f}..{qc.jacobian_max:.2f}"
    return text
