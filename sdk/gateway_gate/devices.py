"""The device deny-list an offline gate holds for device-bound ``YK2:`` codes (docs/devices.md
"For gate vendors"): GET /v1/revocations/devices, the card deny-list's shape (docs/offline.md
§5) with entries ``{"serial", "not_after"}``, signed by the pinned trust-list key
(``typ`` ``device-deny-list+jwt``). Pure: bytes in, checked objects out, the clock passed in.

A gate drops an entry itself once its certificate's ``not_after`` (+ skew) has passed: no
certificate lives longer than 24 h, so the list stays short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.codec.device import DEVICE_DENY_LIST_TYP

from .documents import _int, open_signed_list
from .errors import GateError

__all__ = ["DeviceDenyList", "parse_device_deny_list"]

_MAX_ENTRIES = 1_000_000


@dataclass
class DeviceDenyList:
    """Serials (hex) of the device certificates to refuse, with their not-after."""

    version: int
    issued_at: int
    next_update: int
    expires_at: int
    entries: dict[str, int]

    def is_revoked(self, serial: bytes) -> bool:
        return serial.hex() in self.entries

    def prune(self, now: float, skew_s: int) -> None:
        """Forget certificates past their window: their codes are ``expired`` anyway."""
        cut = now - skew_s
        self.entries = {s: n for s, n in self.entries.items() if n >= cut}

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "issued_at": self.issued_at,
                "next_update": self.next_update, "expires_at": self.expires_at,
                "entries": [{"serial": s, "not_after": n} for s, n in sorted(self.entries.items())]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DeviceDenyList:
        return cls(version=_int(doc, "version"), issued_at=_int(doc, "issued_at"),
                   next_update=_int(doc, "next_update"), expires_at=_int(doc, "expires_at"),
                   entries=_entries(doc.get("entries")))


def _entries(raw: Any) -> dict[str, int]:
    if not isinstance(raw, list) or len(raw) > _MAX_ENTRIES:
        raise GateError("document_invalid", "the device deny-list's entries are not a list")
    out: dict[str, int] = {}
    for e in raw:
        serial = e.get("serial") if isinstance(e, dict) else None
        not_after = e.get("not_after") if isinstance(e, dict) else None
        if not (isinstance(serial, str) and len(serial) == 24
                and all(c in "0123456789abcdef" for c in serial)
                and type(not_after) is int and not_after >= 0):
            raise GateError("document_invalid", "a device deny-list entry is malformed")
        out[serial] = not_after
    return out


def parse_device_deny_list(raw: bytes, pinned: Any,
                           held: DeviceDenyList | None) -> DeviceDenyList:
    """Verify a GET /v1/revocations/devices answer against the pinned trust-list key and merge
    it into ``held`` (a delta must start from the version held; a full list replaces).
    Refuses a version or an issue time below the one held (``rollback``)."""
    got = open_signed_list(raw, pinned, DEVICE_DENY_LIST_TYP, "devices", "device deny-list")
    if held is not None and got.version < held.version:
        raise GateError("rollback", "the device deny-list is older than the one this gate holds")
    if held is not None and got.issued_at < held.issued_at:
        raise GateError("rollback", "the device deny-list was issued before the one held")
    if got.full:
        return DeviceDenyList(version=got.version, entries=_entries(got.doc.get("entries")),
                              **got.times())
    if held is None or not got.starts_from(held.version):
        raise GateError("document_invalid", "a device deny-list delta that does not start "
                                            "from the list this gate holds")
    added, removed = _entries(got.doc.get("added")), _entries(got.doc.get("removed"))
    entries = {s: n for s, n in held.entries.items() if s not in removed}
    entries.update(added)
    return DeviceDenyList(version=got.version, entries=entries, **got.times())
