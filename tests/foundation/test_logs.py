"""gateway/logs.py: JSON lines, one write per loop tick, nothing lost at exit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from gateway.logs import TickBufferedWriter


class _Stream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_without_a_loop_each_line_is_written_at_once() -> None:
    s = _Stream()
    w = TickBufferedWriter(s)
    w.write("a\n")
    w.write("b\n")
    assert s.writes == ["a\n", "b\n"]


async def test_lines_of_one_tick_are_one_write_at_the_end_of_the_tick() -> None:
    s = _Stream()
    w = TickBufferedWriter(s)
    for i in range(100):
        w.write(f"line {i}\n")
        w.flush()  # structlog flushes after every line: a no-op here
    assert s.writes == []
    await asyncio.sleep(0)
    assert s.writes == ["".join(f"line {i}\n" for i in range(100))]
    w.write("next\n")
    await asyncio.sleep(0)
    assert s.writes[-1] == "next\n"


def test_a_line_logged_just_before_exit_is_not_lost() -> None:
    code = ("import asyncio, structlog\n"
            "from gateway.logs import configure\n"
            "configure('json', 'info')\n"
            "async def main():\n"
            "    structlog.get_logger('t').info('last.words', n=1)\n"
            "    raise SystemExit(3)\n"
            "asyncio.run(main())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 3
    lines = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    assert [x["event"] for x in lines] == ["last.words"]


def test_a_logged_exception_is_its_type_and_frames_never_its_message() -> None:
    code = """
import structlog
from gateway.logs import configure
configure("json", "info")
def person_lookup():
    raise ValueError("person 110101199003074514 not found")
try:
    person_lookup()
except ValueError:
    structlog.get_logger("t").exception("request.crashed")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stderr
    line = json.loads(out.strip().splitlines()[-1])
    assert line["event"] == "request.crashed" and line["error"] == "ValueError"
    assert line["where"][-1].endswith(" person_lookup")
    assert "110101199003074514" not in out and "exc_info" not in line
