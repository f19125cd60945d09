"""Data that ship with medgan: the digital head-and-neck CT phantom (the embedded default input)."""

from medgan.datasets.phantom import DEFAULT_LESIONS, PhantomLesion, make_head_phantom, write_phantom_dicom

__all__ = ["DEFAULT_LESIONS", "PhantomLesion", "make_head_phantom", "write_phantom_dicom"]
