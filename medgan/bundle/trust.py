"""The trust boundary of bundles.

A MONAI bundle config is code: ``$`` expressions and ``_target_`` entries run arbitrary Python when
the config is parsed. medgan therefore runs, without asking, only bundles under a trusted root:
the ``bundles/`` folder shipped with medgan and the folders listed in ``MEDGAN_TRUSTED_BUNDLES``
(``os.pathsep``-separated). Anything else needs an explicit ``allow_untrusted=True``
(``medgan run --trust-bundle``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

from medgan.errors import BundleError

PathLike = Union[str, "os.PathLike[str]"]

TRUSTED_ENV = "MEDGAN_TRUSTED_BUNDLES"
SHIPPED_BUNDLES = Path(__file__).resolve().parent.parent.parent / "bundles"


def trusted_bundle_roots() -> List[Path]:
    """Folders whose bundles run without ``allow_untrusted``."""
    roots = [SHIPPED_BUNDLES.resolve()]
    for entry in os.environ.get(TRUSTED_ENV, "").split(os.pathsep):
        if entry.strip():
            roots.append(Path(entry).expanduser().resolve())
    return roots


def check_bundle_trusted(bundle_dir: PathLike, allow_untrusted: bool = False) -> Path:
    """Return the resolved bundle folder, or raise :class:`BundleError` if it is not trusted.

    Symbolic links are resolved first, so a link inside a trusted root that points elsewhere is
    judged by where it points.
    """
    resolved = Path(bundle_dir).expanduser().resolve()
    if allow_untrusted:
        return resolved
    for root in trusted_bundle_roots():
        if resolved == root or root in resolved.parents:
            return resolved
    raise BundleError(
        "this bundle is outside the trusted bundle folders; its configs can run arbitrary Python code",
        resolved,
        f"review its configs, then pass --trust-bundle, or add its parent folder to {TRUSTED_ENV}",
    )
