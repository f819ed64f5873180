"""The console script's start: glibc's malloc put on transparent huge pages by running the process again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer import heap

# Notes each start's GLIBC_TUNABLES in a file, relaunches, then says what it has now, what a program it runs
# gets, and its arguments.
PROBE = """
import json, os, subprocess, sys
with open(sys.argv[1], "a") as f:
    f.write(os.environ.get("GLIBC_TUNABLES", "unset") + "\\n")
from analyzer import heap
heap.relaunch_on_huge_pages()
child = subprocess.run(["sh", "-c", 'printf %s "${GLIBC_TUNABLES-unset}"'], capture_output=True, text=True).stdout
print(json.dumps({"now": os.environ.get("GLIBC_TUNABLES"), "child": child, "argv": sys.argv[2:],
                  "marker": heap.RELAUNCHED in os.environ}))
"""


def probe(tmp_path: Path, tunables: str | None) -> tuple[list[str], dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", heap.RELAUNCHED)}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    starts = tmp_path / "starts"
    done = subprocess.run([sys.executable, "-c", PROBE, str(starts), "a b", "ünï", "--x=1"], env=env,
                          capture_output=True, text=True, check=True)
    return starts.read_text().splitlines(), json.loads(done.stdout)


@pytest.mark.parametrize(("user", "relaunched_with"), [
    (None, "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
])
def test_relaunched_once_on_huge_pages_and_children_get_the_users_setting(
        tmp_path: Path, user: str | None, relaunched_with: str) -> None:
    starts, seen = probe(tmp_path, user)
    assert seen["argv"] == ["a b", "ünï", "--x=1"] and seen["marker"] is False
    assert seen["now"] == user and seen["child"] == (user if user is not None else "unset")
    first = user if user is not None else "unset"
    if heap._huge_pages_on():  # glibc 2.35 or later, huge pages not off: Debian 12 and CI
        assert starts == [first, relaunched_with]
    else:
        assert starts == [first]


def test_not_relaunched_where_the_user_set_hugetlb(tmp_path: Path) -> None:
    starts, seen = probe(tmp_path, "glibc.malloc.hugetlb=0")
    assert starts == ["glibc.malloc.hugetlb=0"] and seen["now"] == seen["child"] == "glibc.malloc.hugetlb=0"


def test_the_console_script_goes_through_the_relaunch() -> None:
    script = Path(sys.executable).with_name("tcpa")
    assert "from analyzer.launch import main" in script.read_text()


@pytest.mark.parametrize(("command", "relaunched"), [("analyze", True), ("report", True), ("live", False),
                                                     ("--help", False)])
def test_offline_commands_relaunch_and_live_does_not(tmp_path: Path, command: str, relaunched: bool) -> None:
    """The launcher, with the CLI replaced by a note of each start's GLIBC_TUNABLES."""
    probe = ("import os, sys; from analyzer import launch, cli\n"
             "cli.main = lambda: print(os.environ.get('GLIBC_TUNABLES'))\n"
             f"open({str(tmp_path / 'starts')!r}, 'a').write(os.environ.get('GLIBC_TUNABLES', 'unset') + '\\n')\n"
             "launch.main()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", heap.RELAUNCHED)}
    done = subprocess.run([sys.executable, "-c", probe, command, "x.pcap"], env=env, capture_output=True,
                          text=True, check=True)
    starts = (tmp_path / "starts").read_text().splitlines()
    assert done.stdout == "None\n"  # the CLI sees the user's environment either way
    assert starts == (["unset", heap.HUGE_PAGES] if relaunched and heap._huge_pages_on() else ["unset"])
