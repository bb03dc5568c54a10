"""The gate's answer to a scanned code or a tapped card (CONTRACT "Codes": same shape for
every face). A failed scan is a `deny` with a stable reason, never an HTTP error."""

from __future__ import annotations

from dataclasses import dataclass, field
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
