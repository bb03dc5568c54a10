"""The offline replay cache (docs/code-format.md §6 "Single use"): ``(issuer, kid, nonce)`` of
every code this gate accepted, each kept until ``issued_at + lifetime_s + skew`` has passed.

Bounded by construction (an entry lives ≤ 65 s with the defaults; ``max_entries`` is a hard
cap beyond which the gate refuses to accept rather than forget) and durable: every entry is
appended to a journal file and fsync'd before the gate opens, so a reboot inside a code's
life does not let the same code through twice. On opening, only live entries are read back,
and the file is rewritten (compacted) when it holds mostly dead ones.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import GateError
from .journal import Journal, encode_string, frame

__all__ = ["ReplayCache"]


class ReplayCache:
    def __init__(self, path: Path | None, now: float, *, max_entries: int = 200_000,
                 sync: bool = True) -> None:
        self._live: dict[str, int] = {}
        self._max = max_entries
        self._next_sweep = 0.0
        self._journal: Journal | None = None
        if path is not None:
            if path.exists():
                old = Journal(path, sync=False)
                total = 0
                for _, record in old.records():
                    total += 1
                    key, until = record.get("k"), record.get("u")
                    if isinstance(key, str) and type(until) is int and until >= now:
                        self._live[key] = until
                old.close()
                if total > 2 * len(self._live) + 1000:  # compact: keep the live entries only
                    tmp = path.with_suffix(".tmp")
                    tmp.unlink(missing_ok=True)
                    fresh = Journal(tmp, sync=False)
                    for key, until in self._live.items():
                        fresh.append({"k": key, "u": until})
                    fresh.flush()
                    fresh.close()
                    os.replace(tmp, path)
            self._journal = Journal(path, sync=sync)

    @staticmethod
    def key(issuer: str, kid: str, nonce: bytes) -> str:
        return f"{issuer}|{kid}|{nonce.hex()}"

    def __len__(self) -> int:
        return len(self._live)

    def seen(self, key: str, now: float) -> bool:
        until = self._live.get(key)
        return until is not None and until >= now

    def add(self, key: str, until: int, now: float) -> None:
        """Remember an accepted code until ``until`` (inclusive); durable before it returns."""
        if now >= self._next_sweep or len(self._live) >= self._max:
            self._live = {k: u for k, u in self._live.items() if u >= now}
            self._next_sweep = now + 10
        if len(self._live) >= self._max:
            raise GateError("replay_cache_full", "the replay cache is full: refusing to "
                                                 "accept rather than forget a used code")
        if self._journal is not None:  # the bytes of encode_record({"k": key, "u": until})
            self._journal.append_line(frame(b'{"k":%s,"u":%d}' % (
                encode_string(key).encode(), until)))
        self._live[key] = until

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
