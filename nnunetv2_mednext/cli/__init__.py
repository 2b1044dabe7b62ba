"""``nnunetv2-mednext`` console command.

Every module ``nnunetv2_mednext/cli/cmd_<name>.py`` is one sub-command: it defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int`` and imports heavy dependencies inside ``run`` only.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from nnunetv2_mednext import __version__
from nnunetv2_mednext.errors import MedNeXtUserError


def _commands() -> list:
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("cmd_"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunetv2-mednext",
        description="MedNeXt backbones for nnU-Net v2 (segmentation) and a 2D classification trainer.",
    )
    parser.add_argument("--version", action="version", version=f"nnunetv2-mednext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        # docstrings are written in reST: ``code`` reads as plain code in a terminal; line breaks are kept
        description = getattr(mod, "DESCRIPTION", mod.HELP).replace("``", "")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    if rest and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.extra = rest
    try:
        return int(args._run(args) or 0)
    except MedNeXtUserError as e:
        print(f"nnunetv2-mednext {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable output, read-only file system, full disk: one line, never a traceback
        from nnunetv2_mednext.fsutil import os_error_message

        message = os_error_message(e)
        if message is None:
            raise
        print(f"nnunetv2-mednext {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
