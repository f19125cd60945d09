"""Run one bad input through one command in-process and judge the outcome.

An outcome is *clear* when the command exits non-zero without calling itself buggy, the message
names the file or folder, states the problem (the kind's pattern) and gives a ``Fix:``; it also
records tracebacks, inputs changed (tree digests before/after) and partial outputs (anything under
the output folder, or a ``.medgan-tmp-*`` leftover anywhere in the corpus).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tests.badinput.corpus import BadInput, Corpus, command
from tests.conftest import tree_digest

TMP_PREFIX = ".medgan-tmp-"
INTERNAL_ERROR = "This is a bug in medgan"


@dataclass
class Outcome:
    """What one ``(kind, command)`` run gave."""

    kind: str
    command: str
    argv: List[str]
    code: int
    text: str
    names_input: bool
    states_problem: bool
    gives_fix: bool
    traceback: bool
    inputs_changed: List[str] = field(default_factory=list)
    partial_outputs: List[str] = field(default_factory=list)

    @property
    def clear(self) -> bool:
        return (self.code != 0 and INTERNAL_ERROR not in self.text and self.names_input and self.states_problem
                and self.gives_fix and not self.traceback)

    @property
    def all_clear(self) -> bool:
        return self.clear and not self.inputs_changed and not self.partial_outputs

    def explain(self) -> str:
        flaws = [name for name, bad in (
            ("exit code 0", self.code == 0), ("internal error", INTERNAL_ERROR in self.text),
            ("file/folder not named", not self.names_input), ("problem not stated", not self.states_problem),
            ("no Fix: line", not self.gives_fix), ("traceback", self.traceback),
            (f"inputs changed {self.inputs_changed}", bool(self.inputs_changed)),
            (f"partial outputs {self.partial_outputs}", bool(self.partial_outputs))) if bad]
        summary = ", ".join(flaws) or "clear"
        return f"{self.kind} x {self.command}: {summary}\n  argv: {self.argv}\n  output:\n{self.text}"


def run_cli(argv: Sequence[str], log_level: int = logging.INFO) -> Tuple[int, str]:
    """``medgan.cli.main(argv)`` with stdout, stderr and every log record captured into one text."""
    from medgan.cli import main

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(log_level)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            try:
                code = main(list(argv))
            except SystemExit as exit_:  # argparse usage errors
                code = exit_.code if isinstance(exit_.code, int) else 2
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return code, buffer.getvalue()


def input_digests(corpus: Corpus, case: BadInput) -> Dict[str, str]:
    """Digests of everything a command may read for ``case``: its folder, the good inputs, the manifests."""
    root = corpus.env.root
    folders = [root / "cases" / case.kind, root / "good", root / "manifests"]
    return {str(folder): tree_digest(folder) for folder in folders}


def leftovers(root: Path) -> List[str]:
    """Temporary files of the atomic writers left anywhere below ``root``."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.join(folder, n) for n in dirs + files if n.startswith(TMP_PREFIX)]
    return found


def _mentions(text: str, names: Sequence[Path], root: Path) -> bool:
    candidates = set()
    for name in names:
        candidates.add(str(name))
        if name.is_absolute() and name.is_relative_to(root):
            candidates.add(name.relative_to(root).as_posix())
        if not name.is_absolute():
            candidates.add(name.as_posix())
    return any(c in text for c in candidates)


def run_invocation(corpus: Corpus, kind: str, command_name: str, out: Path) -> Outcome:
    """Run ``kind`` through ``command_name`` writing below ``out`` (a path that does not exist)."""
    case = corpus.cases[kind]
    env = corpus.env
    if case.output_base is not None:
        out = case.output_base / command_name
    use = command(command_name)
    argv = use.argv(case, env, out)
    before = input_digests(corpus, case)
    fault = case.fault() if case.fault is not None else contextlib.nullcontext()
    with fault:
        code, text = run_cli(argv)
    after = input_digests(corpus, case)
    partial = leftovers(env.root)
    if out.is_file():
        partial.append(str(out))
    elif out.is_dir():  # empty folders a command made are not partial outputs; files are
        record = out / use.batch_record if use.batch_record else None
        partial += [str(p) for p in sorted(out.rglob("*")) if not p.is_dir() and p != record]
        if record is not None and record.is_file() and ",failed," not in record.read_text():
            partial.append(f"{record} (does not record the case as failed)")
    manifest_rows = [Path(p) for p in _manifest_sources(case, env.root)]
    return Outcome(
        kind=kind, command=command_name, argv=list(argv), code=int(code), text=text,
        names_input=_mentions(text, list(case.blame) + manifest_rows, env.root),
        states_problem=re.search(case.problem, text, re.IGNORECASE) is not None,
        gives_fix="Fix:" in text or "fix:" in text,
        traceback="Traceback" in text,
        inputs_changed=[k for k in before if before[k] != after[k]],
        partial_outputs=partial,
    )


def _manifest_sources(case: BadInput, root: Path) -> List[str]:
    """For image kinds, the path the one-row manifest gives (relative to the corpus root)."""
    if case.form in ("dicom", "nifti", "nifti_python"):
        try:
            return [case.path.relative_to(root).as_posix()]
        except ValueError:
            return []
    return []


@dataclass
class Tally:
    """Counts over every outcome of a session."""

    outcomes: List[Outcome] = field(default_factory=list)
    expected_failures: Dict[Tuple[str, str], str] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def counts(self) -> Dict[str, int]:
        scored = [o for o in self.outcomes if (o.kind, o.command) not in self.expected_failures]
        return {
            "kinds tried": len({o.kind for o in self.outcomes}),
            "runs": len(self.outcomes),
            "clear errors": sum(o.clear for o in scored),
            "unclear errors": sum(not o.clear for o in scored),
            "tracebacks": sum(o.traceback for o in scored),
            "inputs changed": sum(bool(o.inputs_changed) for o in scored),
            "partial outputs": sum(bool(o.partial_outputs) for o in scored),
            "known gaps (xfail)": len([o for o in self.outcomes if (o.kind, o.command) in self.expected_failures]),
        }

    def format(self) -> str:
        lines = ["bad-input tally: " + ", ".join(f"{k} {v}" for k, v in self.counts().items())]
        for outcome in self.outcomes:
            reason = self.expected_failures.get((outcome.kind, outcome.command))
            if reason is not None:
                lines.append(f"  known gap: {outcome.kind} x {outcome.command}: {reason}")
        return "\n".join(lines)

    def all_clear(self) -> bool:
        counts = self.counts()
        return counts["unclear errors"] == counts["tracebacks"] == counts["inputs changed"] == 0 \
            and counts["partial outputs"] == 0


#: One tally per test session, printed at the end (see ``conftest.py``).
TALLY = Tally()


def optional_data_root() -> Optional[Path]:
    from tests.conftest import find_data_root

    return find_data_root()
