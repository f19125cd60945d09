"""``medgan run`` killed mid-batch (SIGKILL) and rerun; and sharded over 2 CPU processes with torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medgan.bundle.runner import RunCase, shard_cases
from medgan.cli import main
from tests.bundle.test_run import make_phantom_nifti, make_test_bundle, read_summary, write_manifest

#: Cases big enough (12 windows each) that a kill after the first sidecar lands mid-batch.
CRASH_SHAPE = (96, 96, 32)
CRASH_SPACING_MM = (2.4, 2.4, 6.0)
CRASH_CASES = 6


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _single_thread_run(argv: list[str]) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the single-thread subprocess
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def test_shard_cases_gives_every_case_to_exactly_one_rank():
    cases = [RunCase(f"c{i}", Path(f"/x/{i}.nii.gz")) for i in range(7)]
    shards = [shard_cases(cases, rank, 3) for rank in range(3)]
    assert [c.case_id for c in shards[1]] == ["c1", "c4"]
    assert sorted(c.case_id for shard in shards for c in shard) == sorted(c.case_id for c in cases)
    with pytest.raises(ValueError):
        shard_cases(cases, 3, 3)


def test_sigkill_mid_batch_then_rerun_gives_the_uninterrupted_result(tmp_path):
    from medgan.io.nifti import read_nifti

    bundle = make_test_bundle(tmp_path / "bundles")
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(CRASH_CASES):
        make_phantom_nifti(data / f"case{i}.nii.gz", seed=10 + i, shape=CRASH_SHAPE, spacing_mm=CRASH_SPACING_MM)
        rows.append((f"case{i}", f"case{i}.nii.gz"))
    manifest = write_manifest(data / "cases.csv", rows)
    common = ["run", str(bundle), "--trust-bundle", "--device", "cpu", "--manifest", str(manifest)]

    reference = tmp_path / "uninterrupted"
    assert _single_thread_run(common + ["-o", str(reference)]) == 0

    crashed = tmp_path / "crashed"
    process = subprocess.Popen([sys.executable, "-m", "medgan.cli", *common, "-o", str(crashed)], env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while not list(crashed.glob("*/pred.json")):
            assert process.poll() is None, "medgan run ended before its first sidecar appeared"
            assert time.monotonic() < deadline, "no sidecar within 600 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    finished_at_kill = len(list(crashed.glob("*/pred.json")))
    assert finished_at_kill < CRASH_CASES and not (crashed / "summary.csv").exists()

    assert _single_thread_run(common + ["-o", str(crashed)]) == 0
    summary = read_summary(crashed / "summary.csv")
    assert sorted(summary) == sorted(case_id for case_id, _ in rows)
    assert {row["status"] for row in summary.values()} <= {"ok", "skipped"}
    assert sum(row["status"] == "skipped" for row in summary.values()) >= finished_at_kill >= 1
    for case_id, _ in rows:
        got = read_nifti(crashed / case_id / "pred.nii.gz")
        want = read_nifti(reference / case_id / "pred.nii.gz")
        np.testing.assert_array_equal(got.numpy(), want.numpy())
        np.testing.assert_array_equal(got.affine.numpy(), want.affine.numpy())
        sidecar = json.loads((crashed / case_id / "pred.json").read_text())
        assert sidecar["case_id"] == case_id and sidecar["synthetic"] is True
    assert not list(crashed.rglob(".medgan-tmp-*"))


@pytest.mark.slow
def test_torchrun_two_cpu_processes_share_the_manifest(tmp_path):
    bundle = make_test_bundle(tmp_path / "bundles")
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i in range(5):
        make_phantom_nifti(data / f"case{i}.nii.gz", seed=20 + i)
        rows.append((f"case{i}", f"case{i}.nii.gz"))
    manifest = write_manifest(data / "cases.csv", rows)
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medgan.cli",
         "run", str(bundle), "--trust-bundle", "--device", "cpu", "--manifest", str(manifest), "-o", str(out)],
        check=False, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(out / "summary.csv")
    assert list(summary) == [case_id for case_id, _ in rows]  # merged, in manifest order
    assert all(row["status"] == "ok" for row in summary.values())
    assert [int(summary[f"case{i}"]["rank"]) for i in range(5)] == [0, 1, 0, 1, 0]
    for i in range(5):  # each case done once, by its rank
        assert result.stderr.count(f"case{i}: ok in") == 1
        assert (out / f"case{i}" / "pred.json").is_file()
    assert not list(out.glob("summary.rank*.csv"))
    assert result.stdout.count("medgan run ct_kernel_conversion") == 1  # one report, from rank 0
