"""The bundle input contract: modality, value range, spacing, field of view; refusal or forced flags."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from medgan.bundle.input_check import check_input, ras_spacing_mm, robust_value_range
from medgan.errors import BundleError
from medgan.io.dicom.sidecar import sidecar_path

CT_CONTRACT = {"source_modality": "CT", "source_value_range": [-1024, 3071],
               "spacing_mm_range": [[0.2, 0.2, 0.5], [3.5, 3.5, 6.0]],
               "field_of_view_mm_range": [[100, 100, 20], [600, 600, 2000]]}
MR_CONTRACT = {"source_modality": "MR", "source_value_range": [0, 10000],
               "spacing_mm_range": [[0.2, 0.2, 0.5], [3.5, 3.5, 6.0]]}


def _volume(values, spacing=(1.0, 1.0, 3.0), meta=None):
    from monai.data import MetaTensor

    image = MetaTensor(np.asarray(values, np.float32), affine=np.diag([*spacing, 1.0]))
    image.meta.update(meta or {})
    return image


def _ct(shape=(160, 160, 12), padding=None):
    rng = np.random.default_rng(0)
    values = np.full(shape, -1000.0) + rng.normal(0, 10, shape)
    values[30:130, 30:130] = 40 + rng.normal(0, 10, (100, 100, shape[2]))
    values[60:70, 60:70] = 1200
    if padding is not None:
        values[:8] = padding
    return values


def _mr(shape=(160, 160, 12)):
    values = np.abs(np.random.default_rng(0).normal(0, 5, shape))
    values[30:130, 30:130] = 400 + np.random.default_rng(1).normal(0, 30, (100, 100, shape[2]))
    return values


def test_ct_accepted_mr_refused_by_ct_contract(tmp_path):
    assert check_input(_volume(_ct()), CT_CONTRACT, tmp_path / "ct.nii.gz") == []
    with pytest.raises(BundleError) as info:
        check_input(_volume(_mr()), CT_CONTRACT, tmp_path / "mr.nii.gz", bundle_name="ct_lowdose_denoising")
    message = str(info.value)
    assert "mr.nii.gz" in message and "modality: input has MR" in message and "accepts CT" in message
    assert "--force" in message and "ct_lowdose_denoising" in message


def test_force_returns_flags_and_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        flags = check_input(_volume(_ct()), MR_CONTRACT, tmp_path / "ct.nii.gz", force=True)
    assert [f.check for f in flags] == ["modality", "value_range"]
    assert flags[0].to_dict()["accepted"] == "MR"
    assert "forced past the input contract" in caplog.text


def test_padding_is_not_signal():
    image = _volume(_ct(padding=-2048))
    low, high, padding = robust_value_range(image, declared_low=-1024)
    assert padding == -2048 and low > -1100
    assert check_input(image, CT_CONTRACT) == []


def test_normalised_ct_is_refused():
    flags = check_input(_volume((_ct() + 1024) / 4095), {"source_value_range": [-1024, 3071],
                                                         "source_modality": "CT"}, force=True)
    assert "value_range" in [f.check for f in flags]
    assert any("normalised" in f.found for f in flags)


def test_spacing_and_field_of_view():
    flags = check_input(_volume(_ct(), spacing=(1.0, 1.0, 10.0)), CT_CONTRACT, force=True)
    assert [f.check for f in flags] == ["spacing"] and "z (S-I)" in flags[0].found
    small = check_input(_volume(_ct(), spacing=(0.5, 0.5, 3.0)), CT_CONTRACT, force=True)  # 80 mm across
    assert [f.check for f in small] == ["field_of_view"]


def test_spacing_follows_ras_axes_not_storage_order():
    from monai.data import MetaTensor

    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 0], affine[2, 1], affine[3, 3] = 5.0, -0.5, 0.8, 1.0  # voxel z runs along R-L
    spacing, fov = ras_spacing_mm(MetaTensor(np.zeros((10, 20, 30), np.float32), affine=affine))
    assert spacing.tolist() == [5.0, 0.5, 0.8] and fov.tolist() == [150.0, 5.0, 16.0]


def test_metadata_modality_wins(tmp_path):
    dicom_mr = _volume(_ct(), meta={"Modality": "MR"})
    assert [f.check for f in check_input(dicom_mr, CT_CONTRACT, force=True)] == ["modality"]
    nifti = tmp_path / "scan.nii.gz"
    nifti.write_bytes(b"")
    (tmp_path / "scan.json").write_text(json.dumps({"Modality": "MR"}))
    flags = check_input(_volume(_ct()), CT_CONTRACT, nifti, force=True)
    assert flags[0].check == "modality" and "sidecar" in flags[0].found


def test_synthetic_input_is_flagged():
    image = _volume(_ct(), meta={"medgan": {"nifti": {"descrip": "SYNTHETIC medgan ct_lowdose_denoising v0.1.0"}}})
    assert [f.check for f in check_input(image, CT_CONTRACT, force=True)] == ["synthetic_input"]


# (relative path, what it really is). Templates: the MNI T1 is MR; scct* are CT in Cormack units (not HU).
REAL_VOLUMES = [
    ("ct/abdomen_totalsegmentator/example_ct.nii.gz", "CT"),
    ("ct/abdomen_totalsegmentator/example_ct_sm.nii.gz", "CT"),
    ("ct/phantom_head_philips/thick5mm_kernelUB.nii.gz", "CT"),
    ("ct/phantom_head_philips/thin1mm_kernelUB.nii.gz", "CT"),
    ("ct/phantom_head_philips/thin1mm_kernelYA.nii.gz", "CT"),
    ("mr_ct_pair_porcine/ct_on_mr_grid.nii.gz", "CT"),
    ("dicom/ct_abdomen_j2k", "CT"),
    ("templates_mni/scct.nii", "CT (Cormack units)"),
    ("templates_mni/scct_stripped.nii", "CT (Cormack units)"),
    ("mr/head_vs_seg_001/VS-SEG-001_t1_mpr_tra_gk_v4_2.nii.gz", "MR"),
    ("mr/abdomen_totalsegmentator/example_mr_sm.nii.gz", "MR"),
    ("mr_ct_pair_porcine/mr_t2.nii.gz", "MR"),
    ("templates_mni/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "MR"),
    ("dicom/dcm_qa_ts/Ref/1.nii", "MR"),
]
# Modality and value range only: the measurement is about CT/MR mismatches, not geometry.
MODALITY_CONTRACTS = {"CT": {k: CT_CONTRACT[k] for k in ("source_modality", "source_value_range")},
                      "MR": {k: MR_CONTRACT[k] for k in ("source_modality", "source_value_range")}}


@pytest.mark.realdata
def test_real_mismatches_are_refused(data_root, tmp_path, capsys):
    """Every real CT is refused by the MR contract and every real MR by the CT contract.

    The CT templates in Cormack units (no HU air, no metadata) have MR-like intensities: the MR
    contract refuses them because nothing in the file states MR. An MR NIfTI without a sidecar is
    refused the same way, and accepted once a JSON sidecar says ``"Modality": "MR"``.
    """
    import shutil

    from medgan.io import load_volume

    lines = [f"{'volume':64} {'is':20} {'CT contract':12} {'MR contract':12} {'MR + sidecar':12}"]
    for relative, truth in REAL_VOLUMES:
        path = data_root / relative
        if not path.exists():
            continue
        image = load_volume(path)
        verdict = {}
        for name, contract in MODALITY_CONTRACTS.items():
            flags = check_input(image, contract, path, force=True)
            verdict[name] = "refused" if flags else "accepted"
            if flags:
                with pytest.raises(BundleError, match="--force"):
                    check_input(image, contract, path)
        stated = path.is_dir() or sidecar_path(path).is_file()
        with_sidecar = "-"
        if truth == "MR" and not stated:  # the same file with a sidecar that states MR
            copy = tmp_path / path.name
            shutil.copyfile(path, copy)
            sidecar_path(copy).write_text('{"Modality": "MR"}')
            with_sidecar = "refused" if check_input(load_volume(copy), MODALITY_CONTRACTS["MR"], copy,
                                                    force=True) else "accepted"
            assert with_sidecar == "accepted", relative
        lines.append(f"{relative:64} {truth:20} {verdict['CT']:12} {verdict['MR']:12} {with_sidecar:12}")
        if truth == "CT" or truth.startswith("CT "):
            assert verdict == {"CT": "accepted" if truth == "CT" else "refused", "MR": "refused"}, relative
        else:
            assert verdict == {"CT": "refused", "MR": "accepted" if stated else "refused"}, relative
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert len(lines) > 10
