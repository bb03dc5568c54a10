"""Decision records as the record store hands them to the roll-ups (the fields of
gateway/services/records.py TransactionRecord that the statistics read)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Rec:
    gate: str
    scene: str
    face: str | None
    decision: str
    reason: str
    scanned_at: float
    subject: str | None = None
    venue: str | None = None
    verified_at: float = 0.0
    origin: str = "offline"  # no latency sample unless a test asks for one
