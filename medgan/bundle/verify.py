"""Offline bundle checks in the model zoo's spirit: files, metadata schema, weights hash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Union

from medgan.errors import BundleError
from medgan.utils.atomic import sha256_file

PathLike = Union[str, "os.PathLike[str]"]

SCHEMA_FILE = Path(__file__).resolve().parent / "schema" / "medgan_bundle_metadata.schema.json"
REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/inference.yaml",
    "configs/train.yaml",
    "configs/evaluate.yaml",
    "docs/README.md",
    "LICENSE",
    "models/model.pt",
)


def load_metadata(bundle_dir: PathLike) -> Dict[str, Any]:
    path = Path(bundle_dir) / "configs" / "metadata.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError("metadata.json is missing", path, "a bundle needs configs/metadata.json") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"metadata.json is not valid JSON ({err})", path, "fix the JSON syntax") from None


def verify_bundle_metadata(bundle_dir: PathLike, check_weights: bool = True) -> List[str]:
    """Validate a bundle offline; return the list of problems (empty when the bundle is sound).

    Checks the required files, the metadata against the shipped schema (no download), that the
    changelog names the current version, and that ``models/model.pt`` has the sha256 recorded in
    ``metadata["medgan"]["weights_sha256"]``.
    """
    import jsonschema

    bundle = Path(bundle_dir)
    problems = [f"missing file {name}" for name in REQUIRED_FILES if not (bundle / name).is_file()]
    if (bundle / "configs" / "metadata.json").is_file():
        metadata = load_metadata(bundle)
        schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
        validator = jsonschema.Draft7Validator(schema)
        for error in sorted(validator.iter_errors(metadata), key=lambda e: list(e.path)):
            where = "/".join(str(p) for p in error.path) or "(top level)"
            problems.append(f"metadata {where}: {error.message}")
        version = metadata.get("version")
        if version and version not in metadata.get("changelog", {}):
            problems.append(f"changelog has no entry for version {version}")
        expected = metadata.get("medgan", {}).get("weights_sha256")
        weights = bundle / "models" / "model.pt"
        if check_weights and expected and weights.is_file() and sha256_file(weights) != expected:
            problems.append("models/model.pt does not match medgan.weights_sha256 in metadata.json")
    return problems
