"""The gate's answer to a scanned code or a tapped card (CONTRACT "Codes": same shape for
every face). A failed scan is a `deny` with a stable reason, never an HTTP error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _str
from typing import Any, Literal

Reason = Literal["ok", "malformed", "unknown_issuer", "bad_signature", "expired",
                 "not_yet_valid", "replayed", "revoked", "scene_not_permitted"]
REASONS: tuple[str, ...] = ("ok", "malformed", "unknown_issuer", "bad_signature", "expired",
                            "not_yet_valid", "replayed", "revoked", "scene_not_permitted")
Face = Literal["ykm", "essc", "ssc_card"]


@dataclass(frozen=True)
class VerifyDecision:
    decision: Literal["allow", "deny"]
    reason: Reason
    face: Face | None
    request_id: str
    verified_at: str  # RFC 3339, UTC
    subject: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reason": self.reason, "face": self.face,
                "subject": self.subject, "attributes": self.attributes,
                "request_id": self.request_id, "verified_at": self.verified_at}

    def to_json_bytes(self) -> bytes:
        """`json.dumps(self.to_json()).encode()`, byte for byte, without building the dict
        and a JSON encoder per answer (the gate's answer: measured ≈ 4 µs → ≈ 1.5 µs).
        Strings go through the same C escaper json.dumps uses (`ensure_ascii`)."""
        face = "null" if self.face is None else _str(self.face)
        subject = "null" if self.subject is None else _str(self.subject)
        attributes = json.dumps(self.attributes) if self.attributes else "{}"
        return (f'{{"decision": {_str(self.decision)}, "reason": {_str(self.reason)}, '
                f'"face": {face}, "subject": {subject}, "attributes": {attributes}, '
                f'"request_id": {_str(self.request_id)}, '
                f'"verified_at": {_str(self.verified_at)}}}').encode("ascii")
