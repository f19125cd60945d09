"""Open a bundle: find it, check it is trusted, parse its inference config into runnable parts.

A bundle's ``configs/inference.yaml`` defines the ids of ``docs/bundles.md`` (``network``,
``preprocessing``, ``inferer``, ``postprocessing``, ``precision``, ``device``). :func:`open_bundle`
parses them with MONAI's ``ConfigParser`` after overriding ``bundle_root`` and ``device_name``, so
``medgan run`` and ``python -m monai.bundle run`` use the very same components.

The two helpers the configs call live here too: :class:`LoadVolumed` (the first preprocessing step:
a path -> ``MetaTensor`` through :func:`medgan.io.load_volume`, or a volume already loaded passed
through) and :func:`load_network` (weights checked against their sha256, then loaded strictly).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Hashable, Mapping, Optional, Union

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medgan.bundle.trust import SHIPPED_BUNDLES, check_bundle_trusted
from medgan.bundle.verify import load_metadata
from medgan.bundle.weights import load_state_dict
from medgan.errors import BundleError, MedganError
from medgan.inferers.openvino_backend import OpenVINONetwork

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["LoadVolumed", "OpenBundle", "SERIES_SEPARATOR", "load_network", "open_bundle", "resolve_bundle"]

logger = logging.getLogger(__name__)

#: ``path::selector`` names one DICOM series of a folder (as manifests write it).
SERIES_SEPARATOR = "::"
#: The config ids ``medgan run`` reads (``docs/bundles.md``).
CONFIG_IDS = ("device", "network", "preprocessing", "inferer", "postprocessing", "precision")
INFERENCE_CONFIG = Path("configs") / "inference.yaml"


class LoadVolumed(MapTransform):
    """Load ``d[key]`` with :func:`medgan.io.load_volume` (NIfTI file or DICOM series).

    A value that is already a ``MetaTensor`` passes through unchanged, so a caller that loaded the
    volume itself (to check it first) runs the same preprocessing without reading it twice.

    Args:
        keys: keys holding a path (``path::selector`` picks one DICOM series of a folder) or a volume.
        allow_missing_keys: do not fail on absent keys.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> Dict[Hashable, Any]:
        from medgan.io import load_volume

        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, MetaTensor):
                continue
            text = os.fspath(value)
            series = None
            if SERIES_SEPARATOR in text and not Path(text).exists():
                text, series = text.rsplit(SERIES_SEPARATOR, 1)
            d[key] = load_volume(text, series=series)
        return d


def load_network(network: torch.nn.Module, weights_path: PathLike, expected_sha256: str,
                 device: Union[str, torch.device] = "cpu") -> torch.nn.Module:
    """Load checked weights into ``network`` (all keys must match) and move it to ``device`` in eval mode.

    Args:
        network: the bundle's ``network_def``.
        weights_path: ``models/model.pt`` (a state dict; see :func:`medgan.bundle.load_state_dict`).
        expected_sha256: the hash from ``metadata.json`` (``medgan.weights_sha256``).
        device: where the network runs.

    Raises:
        BundleError: missing file, hash mismatch, a pickle that is not a plain state dict, or
            weights that do not fit the network.
    """
    state = load_state_dict(weights_path, expected_sha256)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise BundleError(f"the weights do not fit the bundle's network_def ({first})", weights_path,
                          "use the weights trained for this network, or fix network_def in inference.yaml") from None
    return network.to(device).eval()


def resolve_bundle(bundle: PathLike) -> Path:
    """A bundle folder from a path or the name of a shipped bundle (``bundles/<name>``).

    Raises:
        BundleError: neither an existing folder nor a shipped bundle's name; the message lists the shipped ones.
    """
    path = Path(bundle).expanduser()
    if path.is_dir():
        return path
    shipped = SHIPPED_BUNDLES / str(bundle)
    if os.sep not in str(bundle) and shipped.is_dir():
        return shipped
    names = sorted(p.name for p in SHIPPED_BUNDLES.glob("*") if (p / INFERENCE_CONFIG).is_file())
    raise BundleError("no such bundle folder, and no shipped bundle of that name", path,
                      f"give a bundle folder or one of: {', '.join(names) or '(none shipped)'}")


def _parsed(parser: Any, key: str, config_file: Path) -> Any:
    """``parser.get_parsed_content(key)``; a medgan error raised inside the config comes out as itself."""
    try:
        return parser.get_parsed_content(key)
    except Exception as err:  # MONAI wraps whatever a config expression raised
        cause: Optional[BaseException] = err
        while cause is not None:
            if isinstance(cause, MedganError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BundleError(f"config id '{key}' failed to build ({first})", config_file,
                          "fix that entry of inference.yaml (rerun with --debug for the traceback)") from err


@dataclass
class OpenBundle:
    """A bundle parsed for inference.

    Attributes:
        root: the bundle folder (resolved).
        name: the folder name.
        metadata: ``configs/metadata.json``.
        network: the generator with checked weights, on ``device``, in eval mode.
        preprocessing: dict transforms on ``image`` (first step :class:`LoadVolumed`).
        inferer: the sliding-window inferer.
        postprocessing: dict transforms on ``pred`` returning HU on the output grid.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast of the windows.
        device: where the windows run.
        parameters: inference settings recorded in every sidecar.
    """

    root: Path
    name: str
    metadata: Dict[str, Any]
    network: torch.nn.Module
    preprocessing: Any
    inferer: Any
    postprocessing: Any
    precision: str
    device: torch.device
    parameters: Dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def accepts(self) -> Dict[str, Any]:
        """The ``medgan`` block of the metadata: the input contract and the weights hash."""
        return dict(self.metadata.get("medgan", {}))

    @property
    def weights_sha256(self) -> str:
        return str(self.accepts.get("weights_sha256", ""))

    @property
    def task(self) -> Optional[str]:
        return self.accepts.get("task")


def _literal_setting(value: Any) -> bool:
    """A config value a user may override: a literal, not an expression, a reference or a component."""
    if isinstance(value, list):
        return all(isinstance(v, (int, float)) for v in value)
    return value is None or (isinstance(value, (int, float, str))
                             and not (isinstance(value, str) and value.startswith(("$", "@", "%"))))


def open_bundle(bundle: PathLike, device: str = "auto", allow_untrusted: bool = False,
                overrides: Optional[Mapping[str, Any]] = None) -> OpenBundle:
    """Find, trust-check and parse a bundle's inference config.

    Args:
        bundle: a bundle folder or the name of a shipped bundle.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the config's ``device_name``).
        allow_untrusted: parse a bundle outside the trusted roots (its config runs Python code).
        overrides: further config ids to override (e.g. ``{"sw_overlap": 0.25}``).

    Raises:
        BundleError: unknown or untrusted bundle, missing config or metadata, a config without one
            of the required ids, weights that fail their check.
    """
    from monai.bundle import ConfigParser

    root = check_bundle_trusted(resolve_bundle(bundle), allow_untrusted=allow_untrusted)
    config_file = root / INFERENCE_CONFIG
    if not config_file.is_file():
        raise BundleError("the bundle has no configs/inference.yaml", root,
                          "a medgan bundle needs the layout of docs/bundles.md")
    metadata = load_metadata(root)
    if "version" not in metadata or "weights_sha256" not in metadata.get("medgan", {}):
        raise BundleError("metadata.json lacks version or medgan.weights_sha256", root / "configs" / "metadata.json",
                          "run medgan.bundle.verify_bundle_metadata on the bundle and fix what it lists")
    parser = ConfigParser()
    parser.read_config(str(config_file))
    overrides = dict(overrides or {})
    tunable = sorted(key for key, value in parser.get().items() if _literal_setting(value) and key not in CONFIG_IDS
                     and key not in ("bundle_root", "device_name", "input_files", "output_dir"))
    unknown = sorted(key for key in overrides if key not in parser or key in CONFIG_IDS)
    if unknown:
        raise BundleError(f"inference.yaml has no setting {', '.join(unknown)} to override", config_file,
                          f"override one of: {', '.join(tunable)}")
    parser.update({"bundle_root": str(root), "device_name": device, **overrides})
    missing = [key for key in CONFIG_IDS if key not in parser]
    if missing:
        raise BundleError(f"inference.yaml does not define {', '.join(missing)}", config_file,
                          "define the ids listed in docs/bundles.md")
    parts = {key: _parsed(parser, key, config_file) for key in CONFIG_IDS}
    inferer = parts["inferer"]
    parameters = {
        "roi_size_vox": [int(v) for v in getattr(inferer, "roi_size", [])],
        "overlap": getattr(inferer, "overlap", None),
        "sw_batch_size": getattr(inferer, "sw_batch_size", None),
        "blend_mode": str(getattr(inferer, "mode", "")),
        "skip_background_below": getattr(inferer, "background_below", None),
        "precision": str(parts["precision"]),
        "backend": "openvino" if isinstance(parts["network"], OpenVINONetwork) else "torch",
        "overrides": overrides,
        # every literal setting of inference.yaml in effect (overrides applied): what made this output
        "settings": {key: parser[key] for key in tunable},
    }
    logger.info("bundle %s v%s from %s: device %s, precision %s", root.name, metadata["version"], root,
                parts["device"], parts["precision"])
    return OpenBundle(root=root, name=root.name, metadata=metadata, network=parts["network"],
                      preprocessing=parts["preprocessing"], inferer=inferer, postprocessing=parts["postprocessing"],
                      precision=str(parts["precision"]), device=torch.device(parts["device"]), parameters=parameters)
