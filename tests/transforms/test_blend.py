"""BlendWithSource / BlendWithSourced: the fraction of the input put back into a denoised output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medgan.transforms.intensity import BlendWithSource, BlendWithSourced


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    source = torch.from_numpy(rng.normal(0.0, 0.1, size=(1, 12, 10, 8)).astype(np.float32))
    pred = MetaTensor(torch.from_numpy(rng.normal(0.0, 0.02, size=(1, 12, 10, 8)).astype(np.float32)),
                      affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])), meta={"filename_or_obj": "pred"})
    return pred, MetaTensor(source)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_blend_is_the_stated_mixture_and_keeps_the_output_metadata(weight):
    pred, source = _pair()
    out = BlendWithSource(weight)(pred, source)
    expected = (1.0 - weight) * pred.as_tensor() + weight * source.as_tensor()
    np.testing.assert_allclose(out.as_tensor().numpy(), expected.numpy(), atol=1e-7)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "pred"
    np.testing.assert_array_equal(out.affine.numpy(), pred.affine.numpy())


def test_blend_dictionary_form_and_refusals():
    pred, source = _pair(1)
    out = BlendWithSourced("pred", source_key="image", weight=0.25)({"pred": pred, "image": source})
    np.testing.assert_allclose(out["pred"].as_tensor().numpy(),
                               (0.75 * pred.as_tensor() + 0.25 * source.as_tensor()).numpy(), atol=1e-7)
    assert out["image"] is source
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BlendWithSource(1.5)
    with pytest.raises(ValueError, match="blend before any transform that changes the grid"):
        BlendWithSource(0.5)(pred, source[:, :6])
