"""Bundles: offline metadata validation, safe weight loading, the trust boundary, and running them.

``open_bundle`` / ``run_bundle`` (``medgan run``) live in :mod:`medgan.bundle.loading` and
:mod:`medgan.bundle.runner`; they import MONAI's config parser and are not re-exported here.
"""

from medgan.bundle.trust import check_bundle_trusted, trusted_bundle_roots
from medgan.bundle.verify import SCHEMA_FILE, verify_bundle_metadata
from medgan.bundle.weights import load_state_dict, save_state_dict

__all__ = [
    "SCHEMA_FILE",
    "check_bundle_trusted",
    "load_state_dict",
    "save_state_dict",
    "trusted_bundle_roots",
    "verify_bundle_metadata",
]
