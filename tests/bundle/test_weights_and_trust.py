"""Safe model loading and the bundle trust boundary."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from medgan.bundle import check_bundle_trusted, load_state_dict, save_state_dict, verify_bundle_metadata
from medgan.bundle.trust import SHIPPED_BUNDLES, TRUSTED_ENV
from medgan.errors import BundleError
from medgan.utils.atomic import sha256_file


class _Payload:
    """Unpickling this object would create a marker file: the attack a weights file can carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _small_state() -> dict:
    torch.manual_seed(0)
    return torch.nn.Conv3d(1, 2, 3).state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_save_and_load_round_trip_with_hash(tmp_path, suffix):
    state = _small_state()
    path = tmp_path / f"model{suffix}"
    digest = save_state_dict(state, path)
    assert digest == sha256_file(path)
    loaded = load_state_dict(path, expected_sha256=digest)
    assert set(loaded) == set(state)
    for key in state:
        assert torch.equal(loaded[key], state[key])


def test_hash_mismatch_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_state_dict(_small_state(), path)
    with pytest.raises(BundleError, match="does not match"):
        load_state_dict(path, expected_sha256="0" * 64)


def test_planted_pickle_payload_does_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "model.pt"
    state = _small_state()
    state["extra"] = _Payload(str(marker))
    with open(path, "wb") as handle:
        pickle.dump(state, handle)
    with pytest.raises(BundleError, match="refused to load"):
        load_state_dict(path)
    assert not marker.exists()
    # A torch.save'd payload is refused the same way.
    torch.save(state, path)
    with pytest.raises(BundleError, match="refused to load"):
        load_state_dict(path)
    assert not marker.exists()
    # The file really is an attack: an unsafe load runs the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_untrusted_bundle_is_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    outside = tmp_path / "some_bundle"
    outside.mkdir()
    with pytest.raises(BundleError, match="--trust-bundle"):
        check_bundle_trusted(outside)
    assert check_bundle_trusted(outside, allow_untrusted=True) == outside.resolve()
    monkeypatch.setenv(TRUSTED_ENV, str(tmp_path))
    assert check_bundle_trusted(outside) == outside.resolve()
    assert check_bundle_trusted(SHIPPED_BUNDLES / "anything") == (SHIPPED_BUNDLES / "anything").resolve()


def test_symlink_into_trusted_root_is_judged_by_its_target(tmp_path, monkeypatch):
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (trusted / "link").symlink_to(outside)
    monkeypatch.setenv(TRUSTED_ENV, str(trusted))
    with pytest.raises(BundleError):
        check_bundle_trusted(trusted / "link")


def test_verify_reports_missing_files_and_schema_errors(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0", "changelog": {}}))
    problems = verify_bundle_metadata(bundle)
    assert any("missing file models/model.pt" in p for p in problems)
    assert any("'monai_version' is a required property" in p for p in problems)
    assert any("changelog has no entry for version 0.1.0" in p for p in problems)
