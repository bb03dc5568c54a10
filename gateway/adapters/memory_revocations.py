"""In-memory revocation lists (one process: the sandbox without Redis, unit tests); the same
contract suite as the Redis store (tests/contract/test_deny_list.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.services.revocations import DenyListRead


@dataclass
class _List:
    version: int = 0
    floor: int = 0  # the version of the newest change dropped from the log
    entries: set[str] = field(default_factory=set)
    log: list[tuple[int, str, bool]] = field(default_factory=list)


class MemoryDenyListStore:
    def __init__(self, delta_events: int = 10_000) -> None:
        self._lists: dict[str, _List] = {}
        self._max_log = delta_events

    def _get(self, name: str) -> _List:
        return self._lists.setdefault(name, _List())

    async def change(self, name: str, entry: str, revoked: bool, now_ms: int) -> int:
        lst = self._get(name)
        if (entry in lst.entries) == revoked:
            return lst.version
        lst.version = max(lst.version + 1, now_ms)
        (lst.entries.add if revoked else lst.entries.discard)(entry)
        lst.log.append((lst.version, entry, revoked))
        if len(lst.log) > self._max_log:
            dropped = lst.log[: len(lst.log) - self._max_log]
            lst.floor = dropped[-1][0]
            del lst.log[: len(dropped)]
        return lst.version

    async def version(self, name: str) -> int:
        return self._get(name).version

    async def read(self, name: str, since: int | None) -> DenyListRead:
        lst = self._get(name)
        if since is None or since < lst.floor or since > lst.version:
            return DenyListRead(lst.version, True, entries=frozenset(lst.entries))
        last: dict[str, bool] = {}
        for version, entry, revoked in lst.log:
            if version > since:
                last[entry] = revoked
        return DenyListRead(lst.version, False,
                            added=frozenset(e for e, r in last.items() if r),
                            removed=frozenset(e for e, r in last.items() if not r))
