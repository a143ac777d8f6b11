"""The ``liverlesion`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)`` and
``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so
that ``liverlesion --help`` and the runtime commands work without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import LiverLesionError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "phantom", "train", "evaluate", "export", "quantize", "inspect",
            "slice_graphs", "predict", "predict_series", "build_engine", "engines", "bench", "serve",
            "triton_repo")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    """The parser, and which module runs each subcommand name."""
    parser = argparse.ArgumentParser(
        prog="liverlesion",
        description="Joint liver-lesion segmentation and classification on CT: train, export, deploy, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"liverlesion {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners: dict[str, object] = {}
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not part of this build
            raise
        before = set(subparsers.choices)
        module.register(subparsers)
        runners.update({added: module for added in set(subparsers.choices) - before})
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(runners[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except LiverLesionError as exc:
        print(f"liverlesion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
