"""Intensity, mask and spatial preprocessing: array and dict forms, exact inverses on real volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd, LoadImage, LoadImaged
from scipy import ndimage

from medgan.transforms.intensity import (DenormalizeHU, DenormalizeHUd, NormalizeHU, NormalizeHUd,
                                         NormalizeMRPercentile, NormalizeMRPercentiled)
from medgan.transforms.mask import CTBodyMask, CTBodyMaskd, MRBodyMask, MRBodyMaskd
from medgan.transforms.spatial import SlabSpacing, preprocessing

CT_SMALL = "ct/abdomen_totalsegmentator/example_ct_sm.nii.gz"
MR_SMALL = "mr/abdomen_totalsegmentator/example_mr_sm.nii.gz"
THICK_5MM = "ct/phantom_head_philips/thick5mm_kernelUB.nii.gz"
F32_EPS = 2.0**-23


def _load(path) -> MetaTensor:
    return LoadImage(image_only=True, dtype=None)(str(path))


# ---------------------------------------------------------------- HU normalisation
@pytest.mark.realdata
@pytest.mark.parametrize("window_hu,output_range", [((-1024.0, 3071.0), (-1.0, 1.0)), ((-160.0, 240.0), (0.0, 1.0))])
def test_normalize_hu_exact_inverse_on_real_ct(window_hu, output_range, real_file):
    image = _load(real_file(CT_SMALL))
    hu = image.numpy().astype(np.float64)
    transform = NormalizeHU(window_hu=window_hu, output_range=output_range)
    normalised = transform(image)
    assert normalised.dtype == torch.float32 and normalised.shape == image.shape
    assert float(normalised.min()) >= output_range[0] and float(normalised.max()) <= output_range[1]
    assert torch.equal(normalised.affine, image.affine)
    info = normalised.meta["medgan"]["NormalizeHU"]
    assert info["clipped_below"] == int((hu < window_hu[0]).sum())
    assert info["clipped_above"] == int((hu > window_hu[1]).sum())
    restored = transform.inverse(normalised)
    assert len(restored.applied_operations) == 0 and torch.equal(restored.affine, image.affine)
    inside = (hu >= window_hu[0]) & (hu <= window_hu[1])
    error = np.abs(restored.numpy().astype(np.float64) - hu)
    assert error[inside].max() <= (window_hu[1] - window_hu[0]) * F32_EPS * 2
    outside = ~inside
    if outside.any():  # clipped values come back as the window edge
        assert np.all(np.isin(np.round(restored.numpy()[outside]), np.round(window_hu)))


def test_normalize_hu_maps_window_edges_and_denormalize_matches():
    hu = torch.tensor([[-1024.0, 0.0, 1023.5, 3071.0, 4000.0]])
    normalised = NormalizeHU((-1024, 3071))(hu)
    assert torch.allclose(normalised, torch.tensor([[-1.0, 1024 / 4095 * 2 - 1, 2047.5 / 4095 * 2 - 1, 1.0, 1.0]]))
    back = DenormalizeHU((-1024, 3071))(normalised)
    assert torch.allclose(back[0, :4], hu[0, :4], atol=4095 * F32_EPS) and float(back[0, 4]) == pytest.approx(3071.0)
    unclipped = NormalizeHU((-1024, 3071), clip=False)(hu)
    assert float(unclipped[0, 4]) > 1.0
    assert float(DenormalizeHU((-1024, 3071), clip_hu=True)(torch.tensor([1.5]))[0]) == 3071.0
    with pytest.raises(ValueError):
        NormalizeHU((100, -100))


def test_normalize_hu_dict_form_and_inverse():
    rng = np.random.default_rng(0)
    source = MetaTensor(rng.uniform(-1100, 2000, (8, 9, 10)).astype(np.float32), affine=torch.diag(torch.tensor([1.0, 2, 3, 1])))
    data = {"source": source, "target": source.clone() + 5, "case_id": "c"}
    transform = NormalizeHUd(["source", "target"], window_hu=(-1000, 1000))
    out = transform(data)
    assert out["case_id"] == "c" and out["source"].meta["medgan"]["NormalizeHU"]["window_hu"] == [-1000.0, 1000.0]
    both_inside = (out["source"].abs() < 1) & (out["target"].abs() < 1)
    assert torch.allclose((out["target"] - out["source"])[both_inside].as_tensor(), torch.tensor(5 / 1000), atol=1e-5)
    back = transform.inverse(out)
    inside = (source >= -1000) & (source <= 1000)
    assert torch.allclose(back["source"][inside], source[inside], atol=2000 * F32_EPS * 2)
    pred = DenormalizeHUd("pred", window_hu=(-1000, 1000))({"pred": torch.zeros(2, 2)})["pred"]
    assert torch.all(pred == 0)


# ---------------------------------------------------------------- MR normalisation
@pytest.mark.realdata
def test_mr_percentile_normalisation_on_real_mr(real_file):
    image = _load(real_file(MR_SMALL))
    out = NormalizeMRPercentile(lower_percentile=1, upper_percentile=99)(image)
    info = out.meta["medgan"]["NormalizeMRPercentile"]
    values = image.numpy()
    expected = np.percentile(values[values > 0], [1, 99])
    assert np.allclose(info["values"], expected)
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0 and torch.equal(out.affine, image.affine)
    middle = (values > expected[0]) & (values < expected[1])
    assert np.all(np.abs(out.numpy()[middle]) < 1)
    mask = MRBodyMask()(image)
    masked = NormalizeMRPercentiled("source", mask_key="body_mask")({"source": image, "body_mask": mask})
    assert masked["source"].meta["medgan"]["NormalizeMRPercentile"]["values"] != info["values"]
    with pytest.raises(ValueError):
        NormalizeMRPercentile()(torch.zeros(4, 4, 4))


# ---------------------------------------------------------------- spatial preprocessing + Invertd
@pytest.mark.realdata
@pytest.mark.parametrize("relative,pixdim", [(CT_SMALL, (2.0, 2.5, 4.0)), (MR_SMALL, (1.5, 3.0, 2.0))])
def test_preprocessing_then_invertd_restores_native_grid(relative, pixdim, real_file):
    path = real_file(relative)
    data = LoadImaged(["source"], image_only=True)({"source": str(path)})
    native = data["source"]
    native_affine, native_shape = native.affine.clone(), tuple(native.shape)
    data["body_mask"] = CTBodyMask()(native) if relative == CT_SMALL else MRBodyMask()(native)
    pre = preprocessing(["source"], pixdim_mm=pixdim, axcodes="RAS", mask_keys=["body_mask"])
    out = pre(data)
    spacing = np.linalg.norm(out["source"].affine[:3, :3].numpy(), axis=0)
    assert np.allclose(spacing, pixdim) and out["source"].shape[0] == 1
    assert np.allclose(np.diag(out["source"].affine[:3, :3].numpy()) > 0, True)  # RAS: positive diagonal
    assert set(np.unique(out["body_mask"].numpy())) <= {0, 1}  # nearest neighbour keeps labels
    out["pred"] = out["source"].clone()
    inverted = Invertd(keys="pred", transform=pre, orig_keys="source")(out)["pred"]
    assert tuple(inverted.shape) == (1,) + native_shape
    assert np.allclose(inverted.affine.numpy(), native_affine.numpy(), atol=1e-4)
    # resampled down and back: a smoothed copy of the original
    diff = np.abs(inverted[0].numpy() - native.numpy())
    assert np.median(diff) < 0.1 * float(np.percentile(np.abs(native.numpy()), 90))


@pytest.mark.realdata
@pytest.mark.parametrize("tilt_deg", [0.0, 18.5])
def test_slab_spacing_equals_whole_volume_spacing_and_inverts(tilt_deg, real_file):
    """Thick -> thin cubic B-spline in slabs: the same volume, affine and inverse as one piece."""
    native = _load(real_file(THICK_5MM))[160:352, 150:310, :]  # the head, 192 x 160 x 20 at 5 mm
    if tilt_deg:  # a gantry-tilt (sheared) grid: slices step along y as well as z
        affine = native.affine.clone().to(torch.float64)
        affine[1, 2] = affine[2, 2] * np.tan(np.radians(tilt_deg))
        native.affine = affine
    kwargs = dict(pixdim_mm=(0.0, 0.0, 1.0), image_mode=3, padding_mode="nearest")
    whole = preprocessing(["image"], **kwargs)({"image": native.clone()})["image"]
    pre = preprocessing(["image"], slab_voxels=24, **kwargs)  # 8 slabs along x, the last one shorter
    slabs = pre({"image": native.clone()})["image"]
    assert tuple(slabs.shape) == tuple(whole.shape) and tuple(whole.shape)[::3] == (1, 96)
    assert torch.allclose(slabs.affine, whole.affine, atol=1e-9)
    assert float((slabs.as_tensor() - whole.as_tensor()).abs().max()) < 1e-6  # HU; cubic: not a copy
    if not tilt_deg:  # (a sheared grid is unsheared by Spacing: y is resampled too, and grows)
        assert tuple(whole.shape) == (1, 192, 160, 96)
        ras = preprocessing(["image"], pixdim_mm=None)({"image": native.clone()})["image"][0]
        assert float((whole[0, :, :, ::5] - ras).abs().max()) < 1e-3  # thick slice centres are kept
        assert float((whole[0, :, :, 2::5] - ras[:, :, :-1]).abs().max()) > 10  # in between: interpolated
    record = slabs.applied_operations[-1]
    assert tuple(record["orig_size"]) == (192, 160, 20)
    backs = []
    for transform in (preprocessing(["image"], **kwargs), pre):
        data = transform({"image": native.clone()})
        data["pred"] = data["image"].clone()
        backs.append(Invertd(keys="pred", transform=transform, orig_keys="image", nearest_interp=False)(data)["pred"])
    assert tuple(backs[1].shape) == (1, 192, 160, 20)
    assert torch.allclose(backs[1].affine.to(torch.float64), native.affine.to(torch.float64), atol=1e-6)
    assert float((backs[1].as_tensor() - backs[0].as_tensor()).abs().max()) < 1e-3  # inverted like Spacingd
    if not tilt_deg:  # thin slices through the thick ones: back onto the thick grid exactly
        assert float((backs[1][0].as_tensor() - native.as_tensor()).abs().max()) < 1e-3


def test_slab_spacing_needs_a_kept_axis():
    with pytest.raises(ValueError, match="kept"):
        SlabSpacing(pixdim=(1.0, 1.0, 1.0))
    with pytest.raises(TypeError, match="MetaTensor"):
        SlabSpacing(pixdim=(0.0, 0.0, 1.0))(torch.zeros(1, 80, 8, 8))


@pytest.mark.realdata
def test_orientation_and_hu_normalisation_invert_exactly(real_file):
    data = LoadImaged(["source"], image_only=True)({"source": str(real_file(CT_SMALL))})
    native = data["source"].clone()
    pre = preprocessing(["source"], pixdim_mm=None, axcodes="LPS", window_hu=(-1024, 3071))
    out = pre(data)
    assert float(out["source"].max()) <= 1.0
    out["pred"] = out["source"].clone()
    restored = Invertd(keys="pred", transform=pre, orig_keys="source")(out)["pred"][0]
    inside = (native >= -1024) & (native <= 3071)
    assert torch.allclose(restored.affine.double(), native.affine.double())
    assert float((restored - native).abs()[inside].max()) <= 4095 * F32_EPS * 2


# ---------------------------------------------------------------- body masks
def _check_body_mask(mask: np.ndarray, tissue: np.ndarray, low: float, high: float) -> None:
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert low < mask.mean() < high, mask.mean()
    _, components = ndimage.label(mask)
    assert components == 1
    assert (mask.astype(bool) & tissue).sum() >= 0.97 * tissue.sum()  # the body's tissue is inside


@pytest.mark.realdata
def test_ct_body_mask_on_real_ct(real_file):
    image = _load(real_file(CT_SMALL))
    mask = CTBodyMask()(image)
    assert torch.equal(mask.affine, image.affine) and mask.shape == image.shape
    hu = image.numpy()
    largest = ndimage.label(hu > -200)[0]
    tissue = largest == np.argmax(np.bincount(largest.ravel())[1:]) + 1
    _check_body_mask(mask.numpy(), tissue, 0.4, 0.9)
    assert mask.numpy()[hu < -900].mean() < 0.05  # outside air (and bowel gas) is mostly not body
    d = CTBodyMaskd("source")({"source": image})
    assert torch.equal(d["body_mask"], mask)


def _phantom_with_table(spacing_mm=(1.0, 1.0, 2.0)):
    x, y = np.meshgrid(np.arange(120), np.arange(100), indexing="ij")
    body = ((x - 60) / 45.0) ** 2 + ((y - 45) / 30.0) ** 2 <= 1
    body[55:65, 40:50] = False  # an air pocket inside: must be filled
    slice_hu = np.where(body, 40.0, -1000.0)
    slice_hu[8:112, 75:78] = 300.0  # table top: 3 mm thick, touching the body at y=75
    slice_hu[20:100, 84:87] = 200.0  # a second, separate table shell
    volume = np.repeat(slice_hu[:, :, None], 20, axis=2).astype(np.float32)
    return MetaTensor(volume, affine=torch.diag(torch.tensor(list(spacing_mm) + [1.0]))), body


def test_ct_body_mask_removes_table_and_fills_holes():
    image, body = _phantom_with_table()
    mask = CTBodyMask()(image).numpy().astype(bool)
    assert not mask[:, 84:87, :].any()  # separate table shell gone
    assert not mask[8:30, 75:78].any() and not mask[90:112, 75:78].any()  # table beyond the body gone
    expected = np.repeat(body[:, :, None], 20, axis=2)
    expected[55:65, 40:50] = True  # the air pocket is filled
    assert mask[expected].all()
    kept_table = mask & ~expected
    assert kept_table.sum() < 0.4 * (104 * 3 * 20)  # only the contact band under the body ...
    distance = ndimage.distance_transform_edt(~expected, sampling=(1.0, 1.0, 2.0))
    assert distance[kept_table].max() <= 4.5  # ... within about two working voxels (2 mm) of it
    plain = CTBodyMask(spacing_mm=(1.0, 1.0, 2.0))(image.numpy())
    assert isinstance(plain, np.ndarray) and np.array_equal(plain.astype(bool), mask)
    with pytest.raises(ValueError):
        CTBodyMask()(image.numpy())  # no affine, no spacing


@pytest.mark.realdata
def test_mr_body_mask_on_real_mr(real_file):
    image = _load(real_file(MR_SMALL))
    mask = MRBodyMaskd("source")({"source": image})["body_mask"]
    values = image.numpy()
    bright = values > np.percentile(values, 60)
    largest = ndimage.label(bright)[0]
    tissue = largest == np.argmax(np.bincount(largest.ravel())[1:]) + 1
    _check_body_mask(mask.numpy(), tissue, 0.5, 0.95)
    otsu = MRBodyMask(method="otsu")(image)
    assert otsu.meta["medgan"]["MRBodyMask"]["threshold"] > mask.meta["medgan"]["MRBodyMask"]["threshold"]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("relative,kind,low,high", [
    ("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz", "ct", 0.15, 0.4),
    ("mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz", "mr", 0.3, 0.7),
    ("mr_ct_pair_porcine/ct_on_mr_grid.nii.gz", "ct", 0.15, 0.4),
    ("mr_ct_pair_porcine/mr_t2.nii.gz", "mr", 0.15, 0.4),
])
def test_body_masks_on_full_size_volumes(relative, kind, low, high, real_file):
    image = _load(real_file(relative))
    mask = (CTBodyMask() if kind == "ct" else MRBodyMask())(image).numpy()
    assert low < mask.mean() < high
    assert ndimage.label(mask)[1] == 1
