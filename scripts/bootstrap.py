#!/usr/bin/env python3
"""Set up medgan in ./.venv and run one job: ``demo`` (the main job) or ``test`` (the test suite).

Only the Python standard library is needed to run this file. It is idempotent: a second run
re-installs only when setup.cfg changed.

    python3 scripts/bootstrap.py demo        # set up, then run the main job on the embedded phantom
    python3 scripts/bootstrap.py test        # set up, then run the default test suite
    python3 scripts/bootstrap.py test -- -m slow   # extra arguments go to pytest

torch: a CPU build ``torch==2.13.0`` is installed unless a torch is already present in the venv
(a GPU user installs their own CUDA build there first: ``.venv/bin/pip install torch``).
Set ``MEDGAN_TORCH_SPEC`` to choose another torch requirement.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("MEDGAN_VENV", ROOT / ".venv"))
STAMP = VENV / ".medgan_setup_stamp"
TORCH_SPEC = os.environ.get("MEDGAN_TORCH_SPEC", "torch==2.13.0")


def _bin(name: str) -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin") / name


def _run(cmd, **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def _fingerprint() -> str:
    digest = hashlib.sha256((ROOT / "setup.cfg").read_bytes())
    digest.update(TORCH_SPEC.encode())
    return digest.hexdigest()


def setup() -> None:
    if not _bin("python").exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    py = _bin("python")
    _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    has_torch = subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        # Install torch on its own first so that no dependency can pull a multi-GB CUDA build.
        _run([py, "-m", "pip", "install", "-q", TORCH_SPEC])
    _run([py, "-m", "pip", "install", "-q", "-e", f"{ROOT}[all]"])
    STAMP.write_text(_fingerprint())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "setup"}:
        print(__doc__)
        return 2
    job, extra = argv[0], argv[1:]
    if extra and extra[0] == "--":
        extra = extra[1:]
    setup()
    if job == "setup":
        return 0
    if job == "demo":
        return subprocess.run([str(_bin("medgan")), "demo", *extra], cwd=ROOT).returncode
    code = subprocess.run([str(_bin("python")), "-m", "pytest", *extra], cwd=ROOT).returncode
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
