"""Append-only, crash-safe files: the scan journal and the replay cache's log.

Record format (docs/offline.md §6), one per line::

    <crc32 of the JSON bytes, 8 lower-case hex digits> <space> <JSON object, UTF-8> <LF>

Each append is one ``write`` of the whole line followed by ``fsync`` before the caller goes
on (the gate opens only after its scan is on disk). A crash can therefore leave at most one
incomplete last line. On opening, a last line without its LF or with a bad checksum is cut
off (that scan was never answered); a bad line in the middle (a damaged disk) is skipped and
counted, and the lines after it are kept. Nothing before the damage is ever rewritten.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Journal", "encode_record", "encode_string", "frame"]


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
#: a JSON string literal exactly as `_ENCODE` writes one (the C escaper it uses itself)
encode_string = _ENCODE


def frame(data: bytes) -> bytes:
    """One journal line around a record's JSON bytes: checksum, space, JSON, LF."""
    return b"%08x " % zlib.crc32(data) + data + b"\n"


def encode_record(record: dict[str, Any]) -> bytes:
    return frame(_ENCODE(record).encode())


def _decode_line(line: bytes) -> dict[str, Any] | None:
    if len(line) < 11 or line[8:9] != b" " or not line.endswith(b"\n"):
        return None
    data = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(data):
            return None
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class Journal:
    """An append-only record file. ``offset`` values are byte positions of record ends, so a
    reader can resume exactly after the last record it handled."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self._sync = sync
        self.damaged = 0  # bad lines skipped in the middle of the file
        self.cut_tail_bytes = 0  # an unfinished last line removed on opening
        path.parent.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._end = os.fstat(self._fd).st_size  # this object is the file's only writer

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        # the end of the last good record: an unfinished last line, and complete lines after
        # the last good record that fail their checksum (a torn write), are cut off
        cut = data.rfind(b"\n") + 1
        while cut > 0:
            start = data.rfind(b"\n", 0, cut - 1) + 1
            if _decode_line(data[start:cut]) is not None:
                break
            cut = start
        self.damaged = sum(1 for line in data[:cut].split(b"\n")[:-1]
                           if _decode_line(line + b"\n") is None)
        if cut < len(data):
            self.cut_tail_bytes = len(data) - cut
            with open(self.path, "r+b") as f:
                f.truncate(cut)
                f.flush()
                os.fsync(f.fileno())

    def append(self, record: dict[str, Any]) -> int:
        """Write one record durably; returns the offset just after it."""
        return self.append_line(encode_record(record))

    def append_line(self, line: bytes) -> int:
        """Write one line made by `frame` (the scan loop formats its records itself: the
        same bytes `encode_record` makes, without building a dict to encode)."""
        written = os.write(self._fd, line)
        if written != len(line):  # a short write on a full disk: fail loudly, never allow
            raise OSError("journal write was short (disk full?)")
        if self._sync:
            os.fsync(self._fd)
        self._end += written
        return self._end

    def records(self, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(offset after the record, record) for each good record from byte ``start``."""
        with open(self.path, "rb") as f:
            f.seek(start)
            for line in f:
                record = _decode_line(line)
                if record is not None:
                    yield f.tell(), record

    def flush(self) -> None:
        os.fsync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        os.close(self._fd)
