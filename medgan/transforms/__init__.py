"""MONAI-style transform families (array ``Foo`` in ``array.py``, dict ``Food`` in ``dictionary.py``).

- :mod:`medgan.transforms.intensity`: ``NormalizeHU`` (invertible), ``DenormalizeHU``, ``NormalizeMRPercentile``.
- :mod:`medgan.transforms.mask`: ``CTBodyMask``, ``MRBodyMask``.
- :mod:`medgan.transforms.spatial`: ``preprocessing`` (orientation + spacing, invertible with ``Invertd``).
- :mod:`medgan.transforms.degradation`, :mod:`medgan.transforms.post`: simulators and post-processing.

Import from the family module; this package re-exports nothing, so importing one family stays cheap.
"""
