"""The `tcpa` console script: the heap set up before anything is imported, then the CLI (cli.py)."""

from __future__ import annotations

from . import heap


def main() -> None:
    heap.relaunch_on_huge_pages()
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
