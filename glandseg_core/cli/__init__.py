"""The ``glandseg`` command (also ``python -m glandseg_core``): one entry point for every verb.

    glandseg train | predict | evaluate | export | card | tta | pack | data

Expected errors (bad files, folders, settings) print one line, ``error: ...``, and exit with code 2; a stopped
training exits with 3.
"""

from __future__ import annotations

import logging
import sys

from ..errors import GlandsegError, TrainingStopped
from .commands import COMMANDS
from .parser import get_args_parser

__all__ = ["get_args_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code. Expected errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_args_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except TrainingStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    except (GlandsegError, FileExistsError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or vanished folder
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before a command could set up its own handling (imports, model loading)
        print("interrupted", file=sys.stderr)
        return 130
