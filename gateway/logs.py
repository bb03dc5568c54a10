"""structlog set-up: JSON lines in production, a console renderer in the sandbox.

Event names are dotted nouns (`code.verified`). A processor drops any field whose name says
it could carry a secret or a personal datum, as a last line of defence: callers must not log
such values in the first place.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_FORBIDDEN = ("token", "secret", "password", "code", "assertion", "citizen", "card_no",
              "authorization", "cookie", "private", "key", "qr", "mac")
_ALLOWED = {"status_code", "error_code", "reason_code", "key_id", "kid"}


_verdicts: dict[str, bool] = {}  # field name → redact? (memoised: names are few and fixed)


def _redact(name: str) -> bool:
    verdict = _verdicts.get(name)
    if verdict is None:
        lname = name.lower()
        verdict = lname not in _ALLOWED and any(f in lname for f in _FORBIDDEN)
        if len(_verdicts) < 4096:
            _verdicts[name] = verdict
    return verdict


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in [n for n in event if _redact(n)]:
        event[name] = "[redacted]"
    return event


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
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
