"""An anthropomorphic digital head-and-neck CT phantom in HU, and its DICOM series.

The phantom is drawn analytically in patient millimetres (RAS, origin near the centre of the
head), so its anatomy does not depend on the voxel grid: skin, subcutaneous fat, a skull with
outer/inner tables and diploe, CSF, grey and white matter, lateral ventricles, eyes with lenses in
orbital fat, paranasal sinuses and nasal cavity, and a neck with muscle, a vertebral body, the spinal
canal and the airway. Small spherical lesions of known diameter and contrast (added to the tissue
they sit in) make detectability and resolution measurable. Optional CT-like noise is Gaussian,
correlated in-plane, seeded, and the result is rounded to integer HU and clipped at -1024 HU like a
scanner's output.

Tissue values are typical 120 kV CT numbers (brain grey/white matter 40/28 HU, CSF 8 HU, fat
-90 HU, muscle 50 HU, cortical bone 1300 HU); they are plausible, not a calibration.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys
from pydicom.dataset import Dataset

PathLike = Union[str, "os.PathLike[str]"]

AIR_HU = -1000.0
#: Lowest CT number a scanner stores; noisy air is clipped here.
MIN_HU = -1024.0
FAT_HU = -90.0
SKIN_HU = 40.0
MUSCLE_HU = 50.0
CSF_HU = 8.0
GREY_MATTER_HU = 40.0
WHITE_MATTER_HU = 28.0
CORTICAL_BONE_HU = 1300.0
DIPLOE_HU = 450.0
CANCELLOUS_BONE_HU = 250.0
VITREOUS_HU = 10.0
LENS_HU = 100.0

#: Outer head surface: centre (RAS mm) and semi-axes (mm).
_HEAD_CENTRE_MM = (0.0, 0.0, 5.0)
_HEAD_SEMI_AXES_MM = (72.0, 92.0, 88.0)
#: Depth below the skin of each layer's inner surface (mm): skin, fat, outer table, diploe, inner table, CSF, cortex.
_LAYERS = (
    (1.5, SKIN_HU), (4.5, FAT_HU), (6.5, CORTICAL_BONE_HU), (9.5, DIPLOE_HU), (11.5, CORTICAL_BONE_HU),
    (13.5, CSF_HU), (17.5, GREY_MATTER_HU),
)
_SKULL_BASE_Z_MM = -30.0  # brain above, face and skull base below


@dataclass(frozen=True)
class PhantomLesion:
    """A spherical lesion added to the tissue it sits in.

    Attributes:
        name: a short label.
        centre_mm: centre in RAS mm (same frame as the phantom's affine).
        diameter_mm: sphere diameter in mm.
        contrast_hu: HU added to the surrounding tissue inside the sphere.
    """

    name: str
    centre_mm: Tuple[float, float, float]
    diameter_mm: float
    contrast_hu: float


#: The default lesions, all in white matter (28 HU) away from the ventricles.
DEFAULT_LESIONS: Tuple[PhantomLesion, ...] = (
    PhantomLesion("hyperdense_10mm", (30.0, 25.0, 36.0), 10.0, 50.0),
    PhantomLesion("hypodense_8mm", (-30.0, 25.0, 36.0), 8.0, -20.0),
    PhantomLesion("low_contrast_6mm", (28.0, -35.0, 21.0), 6.0, 10.0),
    PhantomLesion("calcification_3mm", (-25.0, -38.0, 42.0), 3.0, 400.0),
)


def phantom_affine(shape: Sequence[int], spacing_mm: Sequence[float]) -> np.ndarray:
    """Voxel -> RAS affine of an axial scan centred on the origin, stored as a scanner does.

    Rows and columns run towards the patient's left and back (DICOM orientation ``1\\0\\0\\0\\1\\0``),
    slices from feet to head.

    Args:
        shape: ``(X, Y, Z)`` voxels.
        spacing_mm: ``(X, Y, Z)`` voxel size in mm.
    """
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    centre_vox = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre_vox
    return affine


def make_head_phantom(
    shape: Sequence[int] = (256, 256, 64),
    spacing_mm: Sequence[float] = (0.9, 0.9, 3.0),
    noise_std_hu: float = 0.0,
    noise_correlation_mm: float = 0.6,
    seed: int = 0,
    lesions: Sequence[PhantomLesion] = DEFAULT_LESIONS,
    affine: Optional[np.ndarray] = None,
) -> MetaTensor:
    """Draw the head-and-neck phantom on a voxel grid.

    Args:
        shape: ``(X, Y, Z)`` voxels.
        spacing_mm: ``(X, Y, Z)`` voxel size in mm (ignored when ``affine`` is given).
        noise_std_hu: standard deviation of the added noise in HU; 0 for a noiseless phantom.
        noise_correlation_mm: in-plane Gaussian sigma (mm) correlating the noise as a CT kernel does.
        seed: seed of the noise.
        lesions: the lesions to add.
        affine: voxel -> RAS mm ``(4, 4)``; default :func:`phantom_affine` (axial, centred). Any affine
            works (oblique, other spacing): the anatomy is defined in mm.

    Returns:
        int16 ``MetaTensor`` ``(X, Y, Z)`` in HU; ``meta["medgan"]["phantom"]`` lists the lesions,
        the noise and the seed.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape}")
    affine = phantom_affine(shape, spacing_mm) if affine is None else np.asarray(affine, dtype=np.float64)
    x, y, z = _coordinates(shape, affine)
    hu = np.full(shape, AIR_HU, dtype=np.float32)
    _draw_neck(hu, x, y, z)
    _draw_head(hu, x, y, z)
    for lesion in lesions:
        inside = _ellipsoid(x, y, z, lesion.centre_mm, (lesion.diameter_mm / 2.0,) * 3)
        hu[inside] += np.float32(lesion.contrast_hu)
    if noise_std_hu > 0:
        hu += _correlated_noise(shape, affine, noise_std_hu, noise_correlation_mm, seed)
    volume = np.clip(np.rint(hu), MIN_HU, 32767).astype(np.int16)
    meta = {
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        "filename_or_obj": "medgan digital head phantom",
        "medgan": {"phantom": {"lesions": [asdict(lesion) for lesion in lesions], "noise_std_hu": noise_std_hu,
                               "noise_correlation_mm": noise_correlation_mm, "seed": seed}},
    }
    return MetaTensor(torch.from_numpy(volume), affine=torch.from_numpy(affine.copy()), meta=meta)


def _coordinates(shape: Tuple[int, int, int], affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS mm of every voxel centre as three broadcastable float32 arrays (memory of one volume each)."""
    i = np.arange(shape[0], dtype=np.float32)[:, None, None]
    j = np.arange(shape[1], dtype=np.float32)[None, :, None]
    k = np.arange(shape[2], dtype=np.float32)[None, None, :]
    m = affine.astype(np.float32)
    return tuple(m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3))


def _ellipsoid(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float],
               semi: Sequence[float]) -> np.ndarray:
    return (((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
            + ((z - centre[2]) / semi[2]) ** 2) <= 1.0


def _cylinder(x: np.ndarray, y: np.ndarray, z: np.ndarray, centre_xy: Sequence[float], semi_xy: Sequence[float],
              z_range: Tuple[float, float]) -> np.ndarray:
    in_plane = ((x - centre_xy[0]) / semi_xy[0]) ** 2 + ((y - centre_xy[1]) / semi_xy[1]) ** 2 <= 1.0
    return in_plane & (z >= z_range[0]) & (z <= z_range[1])


def _draw_head(hu: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
    centre, semi = _HEAD_CENTRE_MM, np.asarray(_HEAD_SEMI_AXES_MM)
    previous_depth = 0.0
    for depth_mm, value in _LAYERS:
        hu[_ellipsoid(x, y, z, centre, semi - previous_depth)] = value
        previous_depth = depth_mm
    hu[_ellipsoid(x, y, z, centre, semi - previous_depth)] = WHITE_MATTER_HU
    # skull base: a 5 mm bone plate; below it the face: muscle under skin and fat, with air-filled sinuses
    face = z < _SKULL_BASE_Z_MM - 5.0
    hu[_ellipsoid(x, y, z, centre, semi - _LAYERS[4][0]) & (z < _SKULL_BASE_Z_MM) & ~face] = CORTICAL_BONE_HU
    hu[_ellipsoid(x, y, z, centre, semi - _LAYERS[1][0]) & face] = MUSCLE_HU
    for side in (-1.0, 1.0):
        hu[_ellipsoid(x, y, z, (side * 24.0, 42.0, -52.0), (13.0, 16.0, 15.0))] = AIR_HU  # maxillary sinus
        hu[_ellipsoid(x, y, z, (side * 11.0, 3.0, 16.0), (5.0, 22.0, 9.0))] = CSF_HU  # lateral ventricle
        hu[_ellipsoid(x, y, z, (side * 31.0, 64.0, -18.0), (17.0, 17.0, 15.0))] = FAT_HU  # orbit
        hu[_ellipsoid(x, y, z, (side * 31.0, 66.0, -18.0), (12.0, 12.0, 12.0))] = VITREOUS_HU  # globe
        hu[_ellipsoid(x, y, z, (side * 31.0, 76.0, -18.0), (4.5, 2.0, 4.5))] = LENS_HU  # lens
    hu[_ellipsoid(x, y, z, (0.0, 58.0, -48.0), (6.0, 22.0, 16.0))] = AIR_HU  # nasal cavity
    hu[_ellipsoid(x, y, z, (0.0, 70.0, 28.0), (14.0, 6.0, 8.0))] = AIR_HU  # frontal sinus


def _draw_neck(hu: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
    z_range = (-400.0, -40.0)
    hu[_cylinder(x, y, z, (0.0, -5.0), (56.0, 50.0), z_range)] = SKIN_HU
    hu[_cylinder(x, y, z, (0.0, -5.0), (54.5, 48.5), z_range)] = FAT_HU
    hu[_cylinder(x, y, z, (0.0, -5.0), (49.5, 43.5), z_range)] = MUSCLE_HU
    hu[_cylinder(x, y, z, (0.0, -12.0), (12.0, 10.0), z_range)] = CORTICAL_BONE_HU  # vertebral body
    hu[_cylinder(x, y, z, (0.0, -12.0), (10.0, 8.0), z_range)] = CANCELLOUS_BONE_HU
    hu[_cylinder(x, y, z, (0.0, -28.0), (7.0, 6.0), z_range)] = CSF_HU  # spinal canal
    hu[_cylinder(x, y, z, (0.0, 22.0), (8.0, 7.0), z_range)] = AIR_HU  # airway


def _correlated_noise(shape: Tuple[int, int, int], affine: np.ndarray, std_hu: float, correlation_mm: float,
                      seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape, dtype=np.float32)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if correlation_mm > 0:
        sigma_vox = (correlation_mm / spacing[0], correlation_mm / spacing[1], 0.0)
        noise = gaussian_filter(noise, sigma=sigma_vox, mode="wrap")
    noise *= np.float32(std_hu / max(float(noise.std()), 1e-12))
    return noise


#: The obviously fake identity of the phantom series.
PHANTOM_PATIENT_NAME = "PHANTOM^DIGITAL HEAD"
PHANTOM_PATIENT_ID = "MEDGAN-PHANTOM-0001"


def phantom_template(study_description: str = "medgan digital head phantom (not a patient)") -> Dataset:
    """Patient, study and equipment attributes of the phantom's (fake) patient and study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = PHANTOM_PATIENT_NAME
    ds.PatientID = PHANTOM_PATIENT_ID
    ds.PatientBirthDate = "19000101"
    ds.PatientSex = "O"
    ds.PatientAge = "099Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic digital phantom: no patient data"
    ds.StudyDate, ds.StudyTime = "20000101", "120000"
    ds.StudyID = "PHANTOM1"
    ds.AccessionNumber = "MEDGANDEMO"
    ds.ReferringPhysicianName = "NOBODY^DIGITAL"
    ds.StudyDescription = study_description
    ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "medgan"
    ds.ManufacturerModelName = "digital head phantom"
    ds.InstitutionName = "medgan digital phantom - not a patient"
    ds.BodyPartExamined = "HEAD"
    return ds


def write_phantom_dicom(
    out_dir: PathLike,
    shape: Sequence[int] = (256, 256, 64),
    spacing_mm: Sequence[float] = (0.9, 0.9, 3.0),
    noise_std_hu: float = 5.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Any:
    """Generate the phantom and write it as a CT Image Storage series of a fake patient.

    Args:
        out_dir: the series folder to create (atomically).
        shape: ``(X, Y, Z)`` voxels.
        spacing_mm: ``(X, Y, Z)`` voxel size in mm.
        noise_std_hu: noise standard deviation in HU (0 for none).
        seed: noise seed.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        :class:`medgan.io.dicom_writer.WrittenSeries` of the new series (fresh Study/Series/Frame UIDs).
    """
    from medgan.io.dicom_writer import write_ct_series

    image = make_head_phantom(shape, spacing_mm, noise_std_hu=noise_std_hu, seed=seed)
    extra = {"KVP": "120", "ConvolutionKernel": "STANDARD", "AcquisitionNumber": 1}
    return write_ct_series(image, Path(out_dir), phantom_template(),
                           image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                           series_description="Digital head phantom", series_number=1,
                           extra=extra, overwrite=overwrite)
