"""Reports: per-case PNG montages, a self-contained HTML report, provenance records and sidecars.

The results-folder layout read here (and written by ``medgan run``) is in ``docs/results_layout.md``.
Import from the submodules (:mod:`medgan.report.html`, :mod:`medgan.report.montage`,
:mod:`medgan.report.provenance`); this package imports nothing heavy on its own.
"""
