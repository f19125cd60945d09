"""Benchmark DICOM -> NIfTI: ``medgan convert`` vs dcm2niix vs SimpleITK's ImageSeriesReader.

Each tool runs in its own process under ``/usr/bin/time`` (wall time, CPU time user+system and peak
resident memory, the process and its children), several times, interleaved; the table shows
medians. On a loaded machine the CPU time is the steadier measure of the work each tool does. Inputs: the largest series in
the real data (``dicom/dcm_qa_ct`` Philips #301, 58 slices of 512x512, tilted: every tool corrects or
ignores tilt in its own way) and a generated 512x512x300 CT series (uncompressed, no tilt).

Usage::

    .venv/bin/python benchmarks/bench_dicom_read.py [--runs 5] [--data-root ../shared/data] [--gzip]

Prints a Markdown table. Other processes share the CPU: run it on a quiet machine for firm numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
DCM2NIIX = str(Path(PYTHON).parent / "dcm2niix") if (Path(PYTHON).parent / "dcm2niix").exists() else "dcm2niix"

SITK_SCRIPT = """
import sys, SimpleITK as sitk
reader = sitk.ImageSeriesReader()
reader.SetFileNames(reader.GetGDCMSeriesFileNames(sys.argv[1]))
sitk.WriteImage(reader.Execute(), sys.argv[2], useCompression=sys.argv[2].endswith('.gz'))
"""


def write_generated_series(folder: Path, shape_xyz: Tuple[int, int, int] = (512, 512, 300), seed: int = 0) -> None:
    """A 12-bit CT series: water cylinder with bone ring and noise, 0.7 x 0.7 x 1 mm, random file names."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape_xyz
    yy, xx = np.mgrid[0:ny, 0:nx]
    radius = np.hypot(xx - nx / 2, yy - ny / 2)
    base = np.where(radius < 0.4 * nx, 40.0, -1000.0)
    base[(radius > 0.34 * nx) & (radius < 0.4 * nx)] = 900.0
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for k in range(nz):
        hu = base + rng.normal(0, 15, base.shape)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName, ds.PatientID = "Bench^Mark", "BENCH"
        ds.ImagePositionPatient = [-179.0, -179.0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16).tobytes()
        pydicom.dcmwrite(folder / f"{rng.integers(1 << 40):010x}.dcm", ds, enforce_file_format=True)


def timed(command: Sequence[str]) -> Tuple[float, float, float]:
    """Run ``command`` under /usr/bin/time; (wall seconds, CPU seconds user+system, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        result = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", report.name, *command],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr[-2000:]}")
        wall, user, system, kib = report.read().split()[-4:]
    return float(wall), float(user) + float(system), float(kib) / 1024


def commands(source: Path, out: Path, gzip: bool, series: str) -> Dict[str, List[str]]:
    ext = ".nii.gz" if gzip else ".nii"
    medgan = [PYTHON, "-m", "medgan", "-q", "convert", str(source), str(out / f"medgan{ext}"), "--overwrite"]
    if series:
        medgan += ["--series", series]
    return {
        "medgan convert": medgan,
        "dcm2niix": [DCM2NIIX, "-z", "y" if gzip else "n", "-b", "n", "-f", "d2n", "-o", str(out), str(source)],
        "SimpleITK ImageSeriesReader": [PYTHON, "-c", SITK_SCRIPT, str(source), str(out / f"sitk{ext}")],
    }


def bench(name: str, source: Path, runs: int, gzip: bool, series: str = "") -> List[str]:
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        results: Dict[str, List[Tuple[float, float, float]]] = {}
        tools = commands(source, Path(scratch), gzip, series)
        for _ in range(runs):  # interleave the tools so machine load hits them alike
            for tool, command in tools.items():
                results.setdefault(tool, []).append(timed(command))
                for leftover in Path(scratch).glob("*"):
                    leftover.unlink()
        reference = statistics.median(w for w, _, _ in results["dcm2niix"])
        reference_cpu = statistics.median(c for _, c, _ in results["dcm2niix"])
        for tool, values in results.items():
            wall = statistics.median(w for w, _, _ in values)
            cpu = statistics.median(c for _, c, _ in values)
            memory = statistics.median(m for _, _, m in values)
            rows.append(f"| {name} | {tool} | {wall:.2f} | {min(w for w, _, _ in values):.2f} | {wall / reference:.2f}x "
                        f"| {cpu:.2f} | {cpu / reference_cpu:.2f}x | {memory:.0f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-root", type=Path, default=HERE.parent.parent / "shared" / "data")
    parser.add_argument("--gzip", action="store_true", help="write .nii.gz (default: .nii, no compression)")
    args = parser.parse_args()
    print(f"runs: {args.runs} per tool (median; min also shown), output {'.nii.gz' if args.gzip else '.nii'}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start\n")
    print("| input | tool | wall s (median) | wall s (min) | wall vs dcm2niix | CPU s (median) | CPU vs dcm2niix "
          "| peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    real = args.data_root / "dicom" / "dcm_qa_ct" / "In" / "Philips" / "S21610" / "S3010"
    if real.exists():
        for row in bench("dcm_qa_ct Philips #301 (512x512x58, tilt)", real, args.runs, args.gzip):
            print(row, flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        generated = Path(scratch) / "ct300"
        write_generated_series(generated)
        for row in bench("generated CT 512x512x300", generated, args.runs, args.gzip):
            print(row, flush=True)
        shutil.rmtree(generated, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
