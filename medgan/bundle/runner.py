"""Run a bundle over cases: one input or a manifest, resumable, crash-safe, shardable across ranks.

Per case (``docs/running.md``): load (:func:`medgan.io.load_volume`) -> input contract
(:func:`medgan.bundle.input_check.check_input`) -> the bundle's preprocessing -> sliding-window
prediction (:func:`medgan.inferers.predict_volume`, windows on the device, the volume on the CPU) ->
postprocessing (HU on the output grid) -> ``pred.nii.gz`` (int16, synthetic description) -> the
derived DICOM series ``dicom/`` when the input was DICOM or a reference series is given -> the
sidecar ``pred.json`` **last**. Every file is written under a temporary name and renamed when
complete, so a case is done exactly when its sidecar exists and the files it lists have the sha256
it records; a rerun skips such cases and redoes the others. A failing case is recorded (status
``failed`` with the error in the summary) and the others go on.

Under ``torchrun --nproc_per_node=N`` (``RANK``/``WORLD_SIZE`` set) case ``i`` runs on rank ``i % N``;
each rank writes ``summary.rank<k>.csv``, and after a gloo barrier rank 0 merges them into one
``summary.csv`` in case order.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from medgan.bundle.loading import OpenBundle
from medgan.errors import BundleError, ManifestError, MedganError, OutputError
from medgan.utils.atomic import atomic_path, sha256_file

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["CaseResult", "RunCase", "STATUS_FAILED", "STATUS_OK", "STATUS_SKIPPED", "SUMMARY_COLUMNS",
           "cases_from_input", "cases_from_manifest", "check_case_outputs", "distributed_context",
           "run_bundle", "run_case", "shard_cases", "write_summary"]

logger = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"
PRED_NAME = "pred.nii.gz"
SIDECAR_NAME = "pred.json"
UNCERTAINTY_NAME = "uncertainty.nii.gz"
DICOM_DIR = "dicom"
SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = ("case_id", "status", "seconds", "message", "input", "case_dir", "device", "rank")
#: Outputs written but not renamed (a killed run) start with this prefix (see medgan.utils.atomic).
TMP_PREFIX = ".medgan-tmp-"
#: How long ranks wait for each other at the final barrier.
BARRIER_TIMEOUT = datetime.timedelta(hours=24)
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class RunCase:
    """One input of a run.

    Attributes:
        case_id: the case folder's name (unique in the run).
        source: a NIfTI file or a DICOM folder/file.
        series: DICOM series selector (SeriesInstanceUID or SeriesNumber) when the folder holds several.
    """

    case_id: str
    source: Path
    series: Optional[str] = None

    @property
    def is_dicom(self) -> bool:
        return not self.source.name.lower().endswith(_NIFTI_SUFFIXES)


@dataclass
class CaseResult:
    """What happened to one case (one row of ``summary.csv``)."""

    case_id: str
    status: str
    seconds: float
    message: str = ""
    input: str = ""
    case_dir: str = ""
    device: str = ""
    rank: int = 0
    outputs: Dict[str, str] = field(default_factory=dict)

    def row(self) -> Dict[str, str]:
        return {"case_id": self.case_id, "status": self.status, "seconds": f"{self.seconds:.2f}",
                "message": self.message, "input": self.input, "case_dir": self.case_dir, "device": self.device,
                "rank": str(self.rank)}


def _case_id_from_path(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def cases_from_input(path: PathLike, series: Optional[str] = None, case_id: Optional[str] = None) -> List[RunCase]:
    """One case from ``--input`` (its id: the file name without ``.nii.gz``, or the folder name)."""
    source = Path(path).expanduser().absolute()
    return [RunCase(case_id or _case_id_from_path(source), source, series)]


def cases_from_manifest(manifest_path: PathLike, data_root: Optional[PathLike] = None) -> List[RunCase]:
    """The cases of a manifest's ``source`` column, in file order (every split).

    Structural problems (columns, duplicate ids, paths leaving the data root, encoding) refuse the
    whole manifest; a missing or unreadable image only fails its own case later.

    Raises:
        ManifestError: see :func:`medgan.manifest.load_manifest`.
    """
    from medgan.manifest import load_manifest

    manifest = load_manifest(manifest_path, data_root, check_exists=False)
    if not manifest.cases:
        raise ManifestError("the manifest lists no case", manifest_path, "add one row per input volume")
    return [RunCase(case.case_id, case.source.path, case.source.series) for case in manifest.cases]


def shard_cases(cases: Sequence[RunCase], rank: int, world_size: int) -> List[RunCase]:
    """The cases of one rank: case ``i`` goes to rank ``i % world_size`` (none twice, none left out)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    return [case for index, case in enumerate(cases) if index % world_size == rank]


def _check_case_id(case_id: str) -> None:
    if not case_id or case_id in (".", "..") or "/" in case_id or "\\" in case_id or "\0" in case_id:
        raise ManifestError(f"case id {case_id!r} cannot name a case folder", None,
                            "use case ids without path separators")


def _output_digest(path: Path) -> str:
    from medgan.report.provenance import sha256_input

    return sha256_file(path) if path.is_file() else sha256_input(path)


def check_case_outputs(case_dir: PathLike, bundle: OpenBundle, case: RunCase) -> Optional[str]:
    """Why a case folder does not hold a finished result of this bundle for this input (None: it does).

    Finished means: the sidecar exists and parses, names this bundle's name, version and weights and
    the same config overrides, hashes the same input, and every output it lists exists with the
    sha256 it records.
    """
    from medgan.report.provenance import sha256_input

    sidecar = Path(case_dir) / SIDECAR_NAME
    if not sidecar.is_file():
        return "no sidecar"
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"unreadable sidecar ({err})"
    made_by = record.get("bundle") or {}
    expected = {"name": bundle.name, "version": bundle.version, "weights_sha256": bundle.weights_sha256}
    if any(made_by.get(key) != value for key, value in expected.items()):
        return "made by another bundle, version or weights"
    if (record.get("parameters") or {}).get("overrides", {}) != bundle.parameters.get("overrides", {}):
        return "made with other --override settings"
    digests = record.get("output_sha256") or {}
    if PRED_NAME not in digests:
        return "the sidecar lists no prediction"
    for name, digest in digests.items():
        path = Path(case_dir) / name
        if not path.exists() or _output_digest(path) != digest:
            return f"{name} is missing or differs from its recorded sha256"
    inputs = record.get("inputs") or [{}]
    if not case.source.exists() or inputs[0].get("sha256") != sha256_input(case.source):
        return "the input changed since"
    return None


def _clear_case(case_dir: Path) -> None:
    """Remove an unfinished or stale attempt: sidecar first, then outputs and temporary files."""
    if not case_dir.is_dir():
        return
    (case_dir / SIDECAR_NAME).unlink(missing_ok=True)
    for entry in case_dir.iterdir():
        if entry.name.startswith(TMP_PREFIX) or entry.name in (PRED_NAME, DICOM_DIR):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _to_volume(pred: Any) -> Any:
    """``(1, X, Y, Z)`` postprocessing output -> ``(X, Y, Z)`` MetaTensor."""
    if pred.ndim == 4:
        if pred.shape[0] != 1:
            raise BundleError(f"the bundle's postprocessing returned {pred.shape[0]} channels; one HU volume is needed",
                              None, "fix postprocessing in inference.yaml")
        pred = pred[0]
    return pred


def _same_grid(a: Any, b: Any, tol_mm: float = 1e-3) -> bool:
    if tuple(a.shape) != tuple(b.shape):
        return False
    return bool(np.allclose(np.asarray(a.affine, dtype=np.float64), np.asarray(b.affine, dtype=np.float64),
                            atol=tol_mm))


def run_case(bundle: OpenBundle, case: RunCase, output_dir: PathLike, write_dicom: Optional[bool] = None,
             reference: Optional[PathLike] = None, force: bool = False, uncertainty: bool = False) -> CaseResult:
    """Process one case into ``output_dir/<case_id>/`` (outputs first, sidecar last).

    Args:
        bundle: from :func:`medgan.bundle.loading.open_bundle`.
        case: the input.
        output_dir: the results folder.
        write_dicom: True requires a derived DICOM series (fails without a DICOM input or reference);
            None writes one when possible; False never.
        reference: a DICOM series whose study and frame of reference the derived series joins
            (default: the input series when the input is DICOM).
        force: run inputs outside the bundle's contract (their flags go into the sidecar).
        uncertainty: predict with the in-plane test-time flips of
            :func:`medgan.inferers.predict_with_uncertainty` (4 passes): the output is their mean, their
            per-voxel SD in HU goes to ``uncertainty.nii.gz`` and its score into the sidecar.

    Returns:
        the case's :class:`CaseResult` (status ``ok``).

    Raises:
        MedganError: the case failed; nothing of this attempt is left in its folder.
    """
    import torch
    from monai.data import MetaTensor

    from medgan.bundle.input_check import check_input
    from medgan.inferers import IN_PLANE_FLIPS, predict_volume, predict_with_uncertainty, propagate_sd, uncertainty_sidecar
    from medgan.metrics.masks import body_mask_from_ct
    from medgan.io import load_volume
    from medgan.io.dicom_writer import write_derived_ct_series
    from medgan.io.nifti import validate_volume, write_nifti
    from medgan.keys import Task
    from medgan.report.provenance import build_provenance, nifti_description, write_sidecar

    _check_case_id(case.case_id)
    case_dir = Path(output_dir) / case.case_id
    reference_dir = Path(reference) if reference is not None else (case.source if case.is_dicom else None)
    if write_dicom and reference_dir is None:
        raise BundleError("a DICOM output was asked for, but the input is NIfTI and no reference series was given",
                          case.source, "pass --reference DICOM_DIR, or --format nifti")
    timing: Dict[str, float] = {}
    start = time.perf_counter()
    _clear_case(case_dir)
    try:
        volume = load_volume(case.source, series=case.series)
        validate_volume(volume, case.source, spatial_dims=3)  # 4D, empty or NaN/Inf inputs are refused
        flags = check_input(volume, bundle.accepts, path=case.source, force=force, bundle_name=bundle.name)
        timing["load"] = time.perf_counter() - start

        step = time.perf_counter()
        data = bundle.preprocessing({"image": volume})
        sd_hu = None
        if uncertainty:
            mean, sd = predict_with_uncertainty([bundle.network], data["image"], bundle.inferer,
                                                flips=IN_PLANE_FLIPS, precision=bundle.precision)
            data["pred"] = MetaTensor(mean, meta=dict(data["image"].meta))

            def to_output(values):
                return _to_volume(bundle.postprocessing({**data, "pred": MetaTensor(
                    values, meta=dict(data["image"].meta))})["pred"])

            sd_hu = propagate_sd(to_output, mean, sd)
        else:
            pred = predict_volume(bundle.network, data["image"], bundle.inferer, bundle.precision)
            data["pred"] = MetaTensor(pred, meta=dict(data["image"].meta))
        hu = _to_volume(bundle.postprocessing(data)["pred"])
        if bundle.task != Task.SUPER_RESOLUTION and not _same_grid(hu, volume):
            raise BundleError("the bundle's postprocessing did not return the input's grid (shape and affine)",
                              bundle.root / "configs" / "inference.yaml", "end postprocessing with Invertd on pred")
        timing["inference"] = time.perf_counter() - step

        step = time.perf_counter()
        case_dir.mkdir(parents=True, exist_ok=True)
        outputs = {"pred": PRED_NAME}
        write_nifti(hu, case_dir / PRED_NAME, dtype=np.int16, description=nifti_description(bundle.name, bundle.version))
        if reference_dir is not None and write_dicom is not False:
            uid = str(volume.meta.get("SeriesInstanceUID", "")) if reference is None else None
            write_derived_ct_series(hu, case_dir / DICOM_DIR, reference=reference_dir,
                                    model_name=f"{bundle.name} v{bundle.version}",
                                    reference_series_instance_uid=uid or None, overwrite=True)
            outputs["dicom"] = DICOM_DIR
        if sd_hu is not None:
            write_nifti(sd_hu, case_dir / UNCERTAINTY_NAME, dtype=np.float32,
                        description=nifti_description(bundle.name, bundle.version))
            outputs["uncertainty"] = UNCERTAINTY_NAME
        timing["write"] = time.perf_counter() - step
        digests = {name: _output_digest(case_dir / name) for name in outputs.values()}
        extra: Dict[str, Any] = {"input_check": {"forced": bool(force), "flags": [f.to_dict() for f in flags]},
                                 "output_sha256": digests}
        if flags:
            extra["notes"] = [f"forced past the input contract: {flag}" for flag in flags]
        if hasattr(bundle.inferer, "last_skipped"):
            extra["sliding_window"] = {"windows": int(bundle.inferer.last_windows),
                                       "background_windows_skipped": int(bundle.inferer.last_skipped)}
        if sd_hu is not None:
            body = body_mask_from_ct(hu) if bundle.accepts.get("target_modality") == "CT" else None
            extra["uncertainty"] = uncertainty_sidecar(sd_hu, body, 1, IN_PLANE_FLIPS)
        device = str(bundle.device) if bundle.device.type != "cuda" else f"cuda:{bundle.device.index or 0}"
        record = build_provenance(
            bundle.name, bundle.version, bundle.weights_sha256, [case.source], case_id=case.case_id,
            parameters={**bundle.parameters, "force": bool(force), "series": case.series,
                        "uncertainty": bool(uncertainty),
                        "threads": torch.get_num_threads()},
            device=device, timing_s=timing, outputs=outputs, extra=extra)
        if bundle.task:
            record["bundle"]["task"] = str(bundle.task)
        write_sidecar(record, case_dir / SIDECAR_NAME)
    except BaseException:
        _clear_case(case_dir)
        if case_dir.is_dir() and not any(case_dir.iterdir()):
            case_dir.rmdir()
        raise
    seconds = time.perf_counter() - start
    return CaseResult(case.case_id, STATUS_OK, seconds, "", str(case.source), str(case_dir), device,
                      outputs=outputs)


def _failure_message(err: BaseException) -> str:
    if isinstance(err, MedganError):
        return str(err).replace("\n", " | ")
    return f"internal error {type(err).__name__}: {err} (a bug in medgan; rerun with --debug)"


def _run_shard(bundle: OpenBundle, cases: Sequence[RunCase], output_dir: Path, write_dicom: Optional[bool],
               reference: Optional[PathLike], force: bool, overwrite: bool, rank: int, debug: bool,
               uncertainty: bool = False) -> List[CaseResult]:
    from tqdm import tqdm

    results: List[CaseResult] = []
    if hasattr(bundle.inferer, "progress"):  # a bar over the windows of each case, on a terminal only
        bundle.inferer.progress = sys.stderr.isatty()
    bar = tqdm(cases, desc="cases" if rank == 0 else f"cases (rank {rank})", unit="case", disable=None,
               position=rank, file=sys.stderr)
    for case in bar:
        start = time.perf_counter()
        case_dir = output_dir / case.case_id
        try:
            reason = "--overwrite" if overwrite else check_case_outputs(case_dir, bundle, case)
            if reason is None:
                logger.info("%s: complete from an earlier run, skipped", case.case_id)
                results.append(CaseResult(case.case_id, STATUS_SKIPPED, time.perf_counter() - start,
                                          "complete from an earlier run", str(case.source), str(case_dir),
                                          rank=rank))
                continue
            if (case_dir / SIDECAR_NAME).exists() or any(case_dir.glob(TMP_PREFIX + "*")):
                logger.info("%s: redoing (%s)", case.case_id, reason)
            result = run_case(bundle, case, output_dir, write_dicom, reference, force, uncertainty)
            result.rank = rank
            logger.info("%s: ok in %.1f s -> %s", case.case_id, result.seconds, case_dir)
        except Exception as err:  # one case's failure must not stop the batch; it is reported
            if debug:
                logger.exception("%s: failed", case.case_id)
            message = _failure_message(err)
            logger.error("%s: failed: %s", case.case_id, message)
            result = CaseResult(case.case_id, STATUS_FAILED, time.perf_counter() - start, message,
                                str(case.source), str(case_dir), rank=rank)
        results.append(result)
    return results


def write_summary(results: Sequence[CaseResult], path: PathLike) -> Path:
    """Write the run summary CSV (columns :data:`SUMMARY_COLUMNS`) atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(result.row())
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return Path(path)


def _read_summary(path: Path) -> List[CaseResult]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [CaseResult(r["case_id"], r["status"], float(r["seconds"]), r["message"], r["input"], r["case_dir"],
                       r["device"], int(r["rank"])) for r in rows]


@dataclass(frozen=True)
class DistributedContext:
    """Rank and world size of this process (1 process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def distributed_context() -> DistributedContext:
    """Read ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` as ``torchrun`` sets them."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise MedganError("RANK, WORLD_SIZE or LOCAL_RANK is not an integer", None,
                          "start parallel runs with torchrun --nproc_per_node=N") from None
    return DistributedContext(rank, world, local)


def rank_device(device: str, context: DistributedContext) -> str:
    """One GPU per rank under torchrun: ``auto``/``cuda`` become ``cuda:<LOCAL_RANK>`` when CUDA is present."""
    import torch

    if context.world_size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{context.local_rank % torch.cuda.device_count()}"
    return device


def run_bundle(bundle: OpenBundle, cases: Sequence[RunCase], output_dir: PathLike, write_dicom: Optional[bool] = None,
               reference: Optional[PathLike] = None, force: bool = False, overwrite: bool = False,
               context: Optional[DistributedContext] = None, debug: bool = False,
               uncertainty: bool = False) -> List[CaseResult]:
    """Run every case (this rank's share under torchrun) and write ``summary.csv``.

    Args:
        bundle: the opened bundle.
        cases: all cases of the run (every rank gets the full list and takes its share).
        output_dir: the results folder (created).
        write_dicom: see :func:`run_case`.
        reference: see :func:`run_case`.
        force: run inputs outside the bundle's contract.
        overwrite: redo cases that are already complete.
        context: rank and world size (default: from the environment).
        debug: log failing cases with their traceback.
        uncertainty: see :func:`run_case`.

    Returns:
        the results of every case on rank 0 (after merging), of this rank's cases elsewhere.

    Raises:
        ManifestError: two cases share an id. OutputError: the results folder cannot be created.
    """
    context = context or distributed_context()
    ids = [case.case_id for case in cases]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ManifestError(f"case ids used twice: {', '.join(duplicated)}", None, "give every case its own id")
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the results folder ({err.strerror})", output_dir,
                          "choose a folder you can write to") from None
    mine = shard_cases(cases, context.rank, context.world_size)
    results = _run_shard(bundle, mine, output_dir, write_dicom, reference, force, overwrite, context.rank, debug,
                         uncertainty)
    if context.world_size == 1:
        write_summary(results, output_dir / SUMMARY_NAME)
        return results
    return _merge_ranks(results, ids, output_dir, context)


def _merge_ranks(results: List[CaseResult], ids: Sequence[str], output_dir: Path,
                 context: DistributedContext) -> List[CaseResult]:
    import torch.distributed as dist

    rank_file = output_dir / f"summary.rank{context.rank}.csv"
    write_summary(results, rank_file)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        dist.barrier()
        if context.rank != 0:
            return results
        merged: List[CaseResult] = []
        for rank in range(context.world_size):
            path = output_dir / f"summary.rank{rank}.csv"
            merged.extend(_read_summary(path))
        order = {case_id: index for index, case_id in enumerate(ids)}
        merged.sort(key=lambda r: order[r.case_id])
        write_summary(merged, output_dir / SUMMARY_NAME)
        for rank in range(context.world_size):
            (output_dir / f"summary.rank{rank}.csv").unlink()
        return merged
    finally:
        if created:
            dist.destroy_process_group()
