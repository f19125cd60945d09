"""Bytes <-> MONAI ``MetaTensor``: DICOM series, NIfTI, the derived-DICOM writer.

In memory a volume is a :class:`monai.data.MetaTensor` of shape ``(X, Y, Z)`` (no channel; column,
row, slice as in NIfTI and MONAI's ``LoadImage``) whose ``.affine`` maps voxel indices to RAS
millimetres (MONAI's and NIfTI's convention; DICOM's LPS is converted on the way in and out).
"""
