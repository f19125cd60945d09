"""The ``medgan`` command line: a thin layer over library functions.

Each command group lives in its own module with a ``register(subparsers)`` function that adds
its parsers and sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an
exit code). Heavy imports stay inside those functions so ``medgan --help`` is instant.

Errors derived from :class:`medgan.errors.MedganError` are printed as one clear message without a
traceback (pass ``--debug`` for the traceback) and give a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional, Sequence

# Command modules, in the order their commands appear in ``--help``.
_COMMAND_MODULES: List[str] = [
    "medgan.cli.io_commands",  # series, convert
    "medgan.cli.export_commands",  # export-dicom, demo
    "medgan.cli.manifest_commands",  # manifest validate|scan
    "medgan.cli.registration_commands",  # register
    "medgan.cli.simulation_commands",  # simulate
    "medgan.cli.train_commands",  # train
    "medgan.cli.evaluation_commands",  # evaluate
    "medgan.cli.report_commands",  # report
    "medgan.cli.bundle_commands",  # run
]

logger = logging.getLogger("medgan")


def build_parser() -> argparse.ArgumentParser:
    from medgan import __version__

    parser = argparse.ArgumentParser(
        prog="medgan",
        description="3D GANs for CT and MR: DICOM/NIfTI in and out, data manifests, training pairs, bundles.",
    )
    parser.add_argument("--version", action="version", version=f"medgan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that command group is not written yet
                continue
            raise
        module.register(sub)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``medgan`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.debug, args.quiet)
    from medgan.errors import MedganError

    try:
        code = args.func(args)
    except MedganError as err:
        if args.debug:
            raise
        print(f"medgan {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"medgan {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print(f"medgan {args.command}: error: out of memory. Fix: process a smaller volume or free memory.",
              file=sys.stderr)
        return 3
    except Exception as err:  # unexpected: still no traceback for users, but say it is a bug
        if args.debug:
            raise
        print(f"medgan {args.command}: internal error: {type(err).__name__}: {err}\n"
              "This is a bug in medgan; rerun with --debug for the traceback and report it.", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
