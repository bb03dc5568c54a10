"""RFC 3339 date-times (RFC 3339 §5.6), the one home for formatting and parsing them.

Every answer the gateway gives says its times in UTC with a ``Z``; a gate's verification
answers with one each time, so the date part of a second is formatted once per worker (a few
recent seconds are kept: an offline upload formats its scans' seconds beside the present one).
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["parse_rfc3339", "rfc3339", "rfc3339_s"]

#: A time parsed from "…:54.268Z" is the float nearest to it, often just below (…54.2679999):
#: cutting it down to the millisecond must still say .268. Half a microsecond is above the
#: float's resolution at today's Unix times (~0.24 µs) and below any clock's meaning.
MS_EPSILON = 0.0005

#: whole second -> its "YYYY-MM-DDTHH:MM:SS" (per worker). More than one: an offline upload
#: alternates between its scans' seconds and now's, and a single slot was formatted again on
#: every call (strftime ≈ 3 µs; measured 2-4 % of an upload's CPU).
_SECONDS: dict[int, str] = {}
_SECONDS_MAX = 256


def _second(sec: int) -> str:
    got = _SECONDS.get(sec)
    if got is None:
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        got = _SECONDS[sec] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return got


def rfc3339(t: float) -> str:
    """UTC, second precision plus milliseconds: ``2026-03-01T08:00:00.123Z``."""
    sec = int(t // 1)
    ms = min(999, int((t - sec) * 1000 + MS_EPSILON))
    return f"{_second(sec)}.{ms:03d}Z"


def rfc3339_s(t: float) -> str:
    """UTC, whole seconds: ``2026-03-01T08:00:00Z`` (records shown to people and apps)."""
    return rfc3339(t)[:19] + "Z"


def parse_rfc3339(raw: str) -> float | None:
    """Unix seconds of an RFC 3339 date-time with an offset (``Z`` or ``±hh:mm``); None when
    it is not one (no offset, not a date-time)."""
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return t.timestamp()
