"""`gateway serve --workers N` as a real process for the multi-worker tests: started with its
log in a file, ready when every worker has logged `server.started`, stopped by SIGTERM (killed
if it does not stop within 20 s)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

#: the longest a start may take: 6 s on a quiet box, 13–22 s seen at load average 10
READY_S = 60.0


def _start(env: Mapping[str, str], cwd: Path, log: Path, workers: int) -> subprocess.Popen[bytes]:
    with open(log, "w") as sink:
        return subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--workers",
                                 str(workers)], env=dict(env), cwd=cwd, stdout=sink,
                                stderr=subprocess.STDOUT)


def _starting(proc: subprocess.Popen[bytes], log: Path, workers: int, deadline: float) -> bool:
    """True while the workers are still starting; fails with the log's tail if the server died
    or the deadline passed."""
    if log.read_text().count("server.started") >= workers:
        return False
    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@asynccontextmanager
async def serving(env: Mapping[str, str], cwd: Path, log: Path,
                  workers: int = 2) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = _start(env, cwd, log, workers)
    try:
        deadline = time.monotonic() + READY_S
        while _starting(proc, log, workers, deadline):
            await asyncio.sleep(0.2)
        yield proc
    finally:
        _stop(proc)


@contextmanager
def serving_sync(env: Mapping[str, str], cwd: Path, log: Path,
                 workers: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    proc = _start(env, cwd, log, workers)
    try:
        deadline = time.monotonic() + READY_S
        while _starting(proc, log, workers, deadline):
            time.sleep(0.2)
        yield proc
    finally:
        _stop(proc)


__all__ = ["READY_S", "serving", "serving_sync"]


def children_nice(pid: int) -> dict[int, int]:
    """pid -> nice of every live child of `pid` (from /proc/<child>/stat): how a test or a
    benchmark finds `gateway serve`'s exporter process, its one child at a lower priority."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out[int(entry.name)] = int(fields[16])  # stat field 19: nice
    return out
