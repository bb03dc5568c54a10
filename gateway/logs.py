"""structlog set-up: JSON lines in production, a console renderer in the sandbox.

Event names are dotted nouns (`code.verified`). A processor drops any field whose name says
it could carry a secret or a personal datum, as a last line of defence: callers must not log
such values in the first place.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import traceback
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, TextIO, cast

import structlog

_FORBIDDEN = ("token", "secret", "password", "code", "assertion", "citizen", "card_no",
              "authorization", "cookie", "private", "key", "qr", "mac")
_ALLOWED = {"status_code", "error_code", "reason_code", "key_id", "kid"}


def _writer() -> TickBufferedWriter:
    global _WRITER
    if _WRITER is None or _WRITER._stream is not sys.stderr:
        if _WRITER is not None:
            _WRITER.drain()
        _WRITER = TickBufferedWriter(sys.stderr)
    return _WRITER


#: The request being answered (set by the edge middleware; each aiohttp request runs in its
#: own task, hence its own context). One ContextVar.set per request instead of structlog's
#: bind/unbind pair, which cost ~4 µs on the gate path.
REQUEST_ID: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)


def _add_request_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    rid = REQUEST_ID.get()
    if rid is not None and "request_id" not in event:
        event["request_id"] = rid
    return event


_verdicts: dict[str, bool] = {}  # field name → redact? (memoised: names are few and fixed)


def _redact(name: str) -> bool:
    verdict = _verdicts.get(name)
    if verdict is None:
        lname = name.lower()
        verdict = lname not in _ALLOWED and any(f in lname for f in _FORBIDDEN)
        if len(_verdicts) < 4096:
            _verdicts[name] = verdict
    return verdict


def _exception_summary(_: Any, __: str,
                       event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`exc_info` (log.exception) as the exception's type and where it was raised — the last
    frames as `file:line function` — without its message or any local: a message may carry a
    personal datum or a secret, a frame list does not. Enough for an operator to find the
    bug; the request id ties it to the request."""
    exc_info = event.pop("exc_info", None)
    if not exc_info:
        return event
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return event
    event["error"] = exc_info[0].__name__
    frames = traceback.extract_tb(exc_info[2])[-MAX_FRAMES:]
    event["where"] = [f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames]
    return event


MAX_FRAMES = 8


def _short(path: str) -> str:
    """A source path from its package on (`gateway/web/http.py`, `aiohttp/streams.py`)."""
    for marker in ("/gateway/", "/site-packages/", "/lib/python"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + 1:]
    return path.rsplit("/", 1)[-1]


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in [n for n in event if _redact(n)]:
        event[name] = "[redacted]"
    return event


class TickBufferedWriter:
    """A stderr for structlog that writes once per event-loop tick.

    With a running loop, lines are collected and written together by a callback scheduled for
    the end of the current tick (so a line is out within one tick, and N lines of one tick cost
    one write(2) instead of N); without a loop (CLI commands, start-up) a line is written at
    once. Whatever is still buffered at interpreter exit is written by an atexit hook."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._scheduled = False
        atexit.register(self.drain)

    def write(self, text: str) -> None:
        self._lines.append(text)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
            return
        self._scheduled = True
        loop.call_soon(self.drain)

    def flush(self) -> None:
        """structlog flushes after every line; the tick's drain does the real work."""

    def drain(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing better to do
            pass


_WRITER: TickBufferedWriter | None = None


def configure(fmt: str = "console", level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=lvl, format="%(message)s")
    for noisy in ("aiohttp.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _exception_summary,
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, _writer())),
        cache_logger_on_first_use=True,
    )
