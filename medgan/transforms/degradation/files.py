"""Run a degradation simulator on a file: load, simulate, write the NIfTI and a JSON record beside it.

The record (``<output>.json``: input path and sha256, transform name, every parameter, the
medgan version) is enough to rebuild the output exactly from the input. Used by
``medgan simulate`` and ``pipelines/make_pairs.py``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
from monai.transforms import Transform

from medgan.errors import SimulationError
from medgan.transforms.degradation.array import META_KEY, SimulateKernel, SimulateLowDose
from medgan.utils.atomic import atomic_path, sha256_file

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def record_path(output_path: PathLike) -> Path:
    """The JSON record beside an output NIfTI: ``x.nii.gz`` -> ``x.json``."""
    path = Path(output_path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".json")


def simulate_file(
    transform: Transform,
    input_path: PathLike,
    output_path: PathLike,
    series: Optional[str] = None,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Apply ``transform`` to the volume at ``input_path`` and write ``output_path`` (NIfTI) and its record.

    CT outputs of the low-dose and kernel simulators are written as int16 HU (rounding changes
    the noise by < 0.3 HU); thick slices keep float32.

    Args:
        transform: one of the deterministic simulators (``SimulateLowDose``, ``SimulateKernel``,
            ``SimulateThickSlices``) with all parameters set.
        input_path: a NIfTI file or a DICOM folder.
        output_path: ``.nii`` or ``.nii.gz`` file to write (atomically).
        series: DICOM series selector when the folder holds several.
        overwrite: replace existing outputs.

    Returns:
        The record written beside the output (also holds ``output`` and ``record`` paths).
    """
    from medgan import __version__
    from medgan.io import load_volume
    from medgan.io.nifti import write_nifti

    input_path, output_path = Path(input_path), Path(output_path)
    image = load_volume(input_path, series=series) if series is not None else load_volume(input_path)
    image.meta["filename_or_obj"] = str(input_path)
    try:
        result = transform(image)
    except SimulationError as err:
        if err.path is None:  # name the file the user gave
            raise type(err)(err.problem, input_path, err.fix) from None
        raise
    name = type(transform).__name__
    record = {
        "transform": name,
        "parameters": result.meta[META_KEY][name],
        "input": str(input_path),
        "input_sha256": sha256_file(input_path) if input_path.is_file() else None,
        "series": series,
        "output": str(output_path),
        "output_shape": [int(s) for s in result.shape],
        "medgan_version": __version__,
    }
    integer_hu = isinstance(transform, (SimulateLowDose, SimulateKernel))
    write_nifti(result, output_path, dtype=np.int16 if integer_hu else None,
                description=f"medgan {name}", overwrite=overwrite)
    json_path = record_path(output_path)
    record["record"] = str(json_path)
    with atomic_path(json_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("%s: wrote %s and %s", name, output_path, json_path)
    return record
