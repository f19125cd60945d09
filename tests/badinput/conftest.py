"""Print the bad-input tally at the end of a session that ran the corpus."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter):
    from tests.badinput.runner import TALLY

    if TALLY.outcomes:
        terminalreporter.write_sep("-", "bad-input corpus")
        terminalreporter.write_line(TALLY.format())
