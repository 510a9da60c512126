"""`axolotl-orpheus`: from recordings to a voice, with `axolotl preprocess` and `axolotl train` in between.

  segment -> init -> check -> (axolotl preprocess) -> report -> (axolotl train) -> evaluate -> share -> serve

Each command's `--help` shows its options and their defaults."""

from __future__ import annotations

import argparse
import sys

from axolotl_orpheus.cli import data, demo, listen, serve, share
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.logs import show_info_logs

# In the order of the user's path.
COMMANDS = (
    data.add_segment,
    data.add_init,
    data.add_check,
    data.add_check_transcripts,
    data.add_report,
    listen.add_evaluate,
    share.add_share,
    serve.add_serve,
    listen.add_speak,
    listen.add_decode,
    data.add_cache,
    demo.add_demo,
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="axolotl-orpheus", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    show_info_logs(own_handler=True)
    try:
        args.func(args)
    except UserError as error:
        print(f"axolotl-orpheus {args.command}: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
