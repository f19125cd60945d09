"""Every kind of bad input through every command that accepts it.

Each run must give a clear refusal (non-zero exit, the file or folder named, the problem stated, a
``Fix:``), no traceback, inputs byte-identical afterwards and no partial output. The corpus and the
command table are in :mod:`tests.badinput.corpus`; the tally of the session is printed at the end
(``tests/badinput/conftest.py``) and :func:`test_tally_is_all_clear` asserts it.

Known gaps in modules still being written are listed in :data:`KNOWN_GAPS` and marked
``xfail(strict=True)``: the suite stays green, the gap stays visible, and the mark fails as soon as
the gap is closed (then delete the entry).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.badinput.corpus import KINDS, build_corpus, corpus_source, invocations, write_size_lie
from tests.badinput.runner import TALLY, run_cli, run_invocation
from tests.conftest import find_data_root

SOURCE = corpus_source(find_data_root())
KNOWN_GAPS: dict = {}  # (kind, command) -> why, for gaps not yet closed; each is xfail(strict=True)
TALLY.expected_failures.update(KNOWN_GAPS)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("badinput"), find_data_root())


def _cases():
    for kind, command_name in invocations():
        marks = []
        if (kind, command_name) in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[(kind, command_name)]))
        yield pytest.param(kind, command_name, id=f"{kind}-{command_name}", marks=marks)


def test_corpus_covers_at_least_25_kinds_and_every_kind_meets_a_command():
    kinds = [kind for kind, _, _ in KINDS]
    assert len(kinds) >= 25 and len(set(kinds)) == len(kinds)
    tried = {kind for kind, _ in invocations()}
    assert tried == set(kinds)
    assert set(KNOWN_GAPS) <= set(invocations())


@pytest.mark.parametrize("kind, command_name", list(_cases()))
def test_bad_input_is_refused_clearly(corpus, kind, command_name, tmp_path):
    outcome = run_invocation(corpus, kind, command_name, tmp_path / "out")
    TALLY.add(outcome)
    assert outcome.all_clear, outcome.explain()


# ---------------------------------------------------------------------------------------------
# The real command line in a subprocess


def _medgan(*argv: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("medgan")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "medgan.cli"]
    return subprocess.run(command + list(argv), capture_output=True, text=True, timeout=300)


def test_real_cli_refuses_without_traceback_and_shows_it_with_debug(corpus, tmp_path):
    case = corpus.cases["dicom_without_pixel_data"]
    plain = _medgan("convert", str(case.path), str(tmp_path / "a.nii.gz"))
    assert plain.returncode == 2
    assert str(case.path) in plain.stderr and "pixel data" in plain.stderr and "Fix:" in plain.stderr
    assert "Traceback" not in plain.stderr + plain.stdout
    debug = _medgan("--debug", "convert", str(case.path), str(tmp_path / "b.nii.gz"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DicomSeriesError" in debug.stderr
    assert not list(tmp_path.iterdir())


def test_real_cli_manifest_in_latin1_is_refused(corpus):
    case = corpus.cases["manifest_wrong_encoding"]
    result = _medgan("manifest", "validate", str(case.path), "--data-root", str(case.data_root))
    assert result.returncode == 2
    assert str(case.path) in result.stderr and "UTF-8" in result.stderr and "Fix:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


_RSS_SCRIPT = """
import json, resource, sys, time
start = time.perf_counter()
from medgan.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - start,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)
"""


@pytest.mark.parametrize("shape, name", [((32000, 32000, 32000), "bomb.nii"), ((1600, 1600, 1000), "bomb.nii.gz")])
def test_memory_bomb_is_refused_before_allocating(tmp_path, shape, name):
    """A header declaring 60 TiB (.nii) or 5.1 GB behind a lying gzip size field (.nii.gz): refused with
    the peak memory of the whole process below 1 GiB (torch included), in seconds."""
    bomb = write_size_lie(tmp_path / name, shape)
    target = tmp_path / "target.nii.gz"
    result = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, "evaluate", "--profile", "raw", "--pred", str(bomb),
                             "--target", str(target)], capture_output=True, text=True, timeout=300)
    stats = json.loads(result.stderr.strip().splitlines()[-1])
    assert stats["code"] == 2, result.stderr
    assert str(bomb) in result.stderr and "Fix:" in result.stderr
    assert stats["max_rss_mib"] < 1024, stats
    assert stats["seconds"] < 60, stats


def test_read_nifti_counts_a_large_gzip_stream_instead_of_trusting_its_size_field(tmp_path):
    from medgan.errors import ImageFileError
    from medgan.io.nifti import read_nifti

    bomb = write_size_lie(tmp_path / "bomb.nii.gz", (1600, 1600, 1000))
    start = time.perf_counter()
    with pytest.raises(ImageFileError, match="bomb.nii.gz: the compressed stream is damaged"):
        read_nifti(bomb)
    assert time.perf_counter() - start < 5


def test_a_wrong_gzip_crc_is_refused_by_read_nifti_and_manifest_validate(corpus, tmp_path):
    """Voxels that decode fine but fail the gzip CRC: nibabel stops at the data's end and never sees it."""
    from medgan.errors import ImageFileError
    from medgan.io.nifti import read_nifti

    raw = bytearray(corpus.env.ct_nifti.read_bytes())
    raw[-8:-4] = bytes(b ^ 0xFF for b in raw[-8:-4])  # the CRC32 field of the gzip trailer
    bad = tmp_path / "crc.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ImageFileError, match="crc.nii.gz: the compressed stream is damaged"):
        read_nifti(bad)
    manifest = tmp_path / "m.csv"
    manifest.write_text("case_id,patient_id,source,split\ncase1,p1,crc.nii.gz,test\n", encoding="utf-8")
    code, text = run_cli(["manifest", "validate", str(manifest), "--data-root", str(tmp_path)])
    assert code == 2 and "crc.nii.gz" in text and "damaged" in text, text


def test_tally_is_all_clear():
    """Runs last in this module: prints the tally of every run above and asserts it is all clear."""
    if not TALLY.outcomes:
        pytest.skip("no bad-input run in this session")
    print("\n" + TALLY.format())
    counts = TALLY.counts()
    if counts["runs"] == len(invocations()):
        assert counts["kinds tried"] >= 25
    assert TALLY.all_clear(), TALLY.format() + "\n" + "\n".join(
        o.explain() for o in TALLY.outcomes if not o.all_clear and (o.kind, o.command) not in KNOWN_GAPS)
