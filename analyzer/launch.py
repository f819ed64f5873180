"""The `tcpa` console script: the heap set up before anything is imported, then the CLI (cli.py)."""

from __future__ import annotations

import sys

from . import heap

# Runs over capture files, bound by CPU: these go on huge pages (heap.relaunch_on_huge_pages). A live capture
# is paced by the network, and there they cost 15-45 MB of peak RSS for nothing (400-408 -> 421-444 MB at
# 100 000 packets/s).
HUGE_PAGES_FOR = ("analyze", "report")


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in HUGE_PAGES_FOR:
        heap.relaunch_on_huge_pages()
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
