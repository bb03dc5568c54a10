"""Offline uploads (CONTRACT "Offline gates and transaction records"; docs/records.md): an
offline gate's journal, up to 1,000 scans a batch, each re-verified at its scan time by the
ONE gate decision pipeline (origin ``offline``) and claimed in the same single-use store as
the online path — in bulk (`GatePipeline.verify_many`): the batch's signatures checked in a
tight loop, all its claims and records in one round trip, its kept answers in one more, the
answer's JSON written once (docs/records.md "Offline uploads"; docs/performance.md).

Per scan: ``confirmed`` (the pipeline allowed it: this gate's use is the first, or the same
request again), ``double_use`` (``replayed``: another use came first — online or uploaded, by
any gate — named in ``first_use``), ``invalid`` with the reason code. A malformed item is
``invalid``/``malformed`` for that item only. Idempotent per (gate, request id): the answer is
kept for `IDEMPOTENCY_S` under the gate's own key, so an upload sent twice answers the same
and records nothing new (the pipeline's claims already record each decision once).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

from gateway.authz.tokens import AccessTokenClaims
from gateway.errors import Forbidden, InvalidRequest, PayloadTooLarge
from gateway.services.decision import VerifyDecision
from gateway.services.gate import CardTap, GatePipeline, GateScan
from gateway.services.records import RecordingClaims
from gateway.services.trustlist import KeysBeingFetched
from gateway.timefmt import parse_rfc3339

__all__ = ["IDEMPOTENCY_S", "MAX_SCANS", "Answered", "OfflineResult", "OfflineUploads",
           "results_body", "results_json"]

MAX_SCANS: Final = 1000
#: How long an upload's answers are kept for the same upload sent again (a gate resuming).
IDEMPOTENCY_S: Final = 86_400
MAX_CODE: Final = 1024  # every code format is far shorter (the e-SSC code: 182 characters)
STALE_MARGIN_S: Final = 5.0  # an upload takes less than this from here to the pipeline

Status = Literal["confirmed", "double_use", "invalid"]


@dataclass(frozen=True, slots=True)
class OfflineResult:
    request_id: str | None
    status: Status
    reason: str | None = None
    first_use: tuple[str, str] | None = None  # (gate, RFC 3339 time of its scan)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.first_use is not None:
            out["first_use"] = {"gate": self.first_use[0], "at": self.first_use[1]}
        return out

    def dumps(self) -> str:
        """The result's JSON, written once: kept for the upload sent again AND spliced into
        the answer as it is (`results_body`)."""
        if self.status == "confirmed" and self.reason is None and self.first_use is None:
            return f'{{"request_id":{_str(self.request_id)},"status":"confirmed"}}'
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> OfflineResult | None:
        try:
            d = json.loads(raw)
            first = d.get("first_use")
            return cls(d["request_id"], d["status"], d.get("reason"),
                       (first["gate"], first["at"]) if first else None)
        except (ValueError, KeyError, TypeError):
            return None


_encode_str = json.JSONEncoder(separators=(",", ":")).encode


def _str(value: str | None) -> str:
    return "null" if value is None else _encode_str(value)


def _scan_time(scan: GateScan) -> float:
    if scan.scanned_at is not None:
        return scan.scanned_at
    assert isinstance(scan.credential, CardTap)
    return parse_rfc3339(scan.credential.scanned_at) or 0.0


def _malformed(request_id: str | None) -> OfflineResult:
    return OfflineResult(request_id, "invalid", "malformed")


def parse_scan(item: Any, scene: str) -> GateScan | OfflineResult:
    """One journal item as the pipeline's presentation, or its `invalid` result."""
    if not isinstance(item, dict):
        return _malformed(None)
    rid = item.get("request_id")
    if not isinstance(rid, str) or not 1 <= len(rid) <= 128:
        return _malformed(None)
    raw_at = item.get("scanned_at")
    if not isinstance(raw_at, str) or len(raw_at) > 64:
        return _malformed(rid)
    scanned_at = parse_rfc3339(raw_at)
    if scanned_at is None:
        return _malformed(rid)
    local = item.get("local_decision")
    if local is not None and local not in ("allow", "deny"):
        return _malformed(rid)
    code, card = item.get("code"), item.get("card")
    if (code is None) == (card is None):  # exactly one of them
        return _malformed(rid)
    if code is not None:
        if not isinstance(code, str) or len(code) > MAX_CODE:
            return _malformed(rid)
        return GateScan(scene, rid, code, scanned_at, origin="offline")
    if not isinstance(card, dict):
        return _malformed(rid)
    fields = []
    for name, limit in (("card_no", 64), ("region", 16), ("terminal_mac", 256)):
        value = card.get(name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            return _malformed(rid)
        fields.append(value)
    # the tap's own scan time, as the PSAM's MAC covers it (the raw string)
    return GateScan(scene, rid, CardTap(fields[0], fields[1], fields[2], raw_at),
                    origin="offline")


class OfflineUploads:
    def __init__(self, pipeline: GatePipeline, claims: RecordingClaims, now: Callable[[], float],
                 offline_max_s: float = 900.0, idempotency_s: float = IDEMPOTENCY_S) -> None:
        self._pipeline = pipeline
        self._claims = claims
        self._now = now
        self._offline_max = offline_max_s
        self._keep = idempotency_s

    async def upload(self, gate: AccessTokenClaims, items: Any) -> list[Answered]:
        if not isinstance(items, list):
            raise InvalidRequest("scans must be an array")
        if len(items) > MAX_SCANS:
            raise PayloadTooLarge(f"At most {MAX_SCANS} scans per upload")
        if gate.scene is None:
            raise Forbidden("This gate has no scene")
        parsed = [parse_scan(item, gate.scene) for item in items]
        keys = [self._key(gate.client_id, p.request_id) if isinstance(p, GateScan) else None
                for p in parsed]
        # 1. answers kept from an earlier upload — read only for scans the pipeline would now
        # call too old: inside the allowance it answers an upload sent again the same way by
        # itself (the claims remember each use; a deny is recorded once per request id)
        stale = self._now() - self._offline_max + STALE_MARGIN_S
        old = [k for p, k in zip(parsed, keys, strict=True)
               if k is not None and isinstance(p, GateScan) and _scan_time(p) < stale]
        kept = await asyncio.gather(*(self._claims.peek(k) for k in old))
        kept_by_key = dict(zip(old, kept, strict=True))
        # 2. the rest through the pipeline in bulk (`GatePipeline.verify_many`): signature
        # checks in a tight loop, every claim and record of the batch in one round trip
        todo = [i for i, p in enumerate(parsed)
                if isinstance(p, GateScan) and kept_by_key.get(keys[i] or "") is None]
        scans = [parsed[i] for i in todo]
        decided = await self._pipeline.verify_many(
            gate, scans,  # type: ignore[arg-type]  # todo holds GateScans only
            lambda scan: self._verify_one(gate, scan))
        fresh = {i: _result(d) for i, d in zip(todo, decided, strict=True)}
        results: list[OfflineResult] = []
        for i, p in enumerate(parsed):
            if isinstance(p, OfflineResult):
                results.append(p)
                continue
            if i in fresh:
                results.append(fresh[i])
                continue
            got = OfflineResult.loads(kept_by_key[keys[i] or ""] or "")
            results.append(got if got is not None else _malformed(p.request_id))
        # 3. keep the new answers for the same upload again, one round trip (their JSON,
        # written once, is the answer's too: `results_body`)
        wire = {i: fresh[i].dumps() for i in todo}
        await self._claims.remember_many(self._keep, [(k, wire[i]) for i in todo
                                                      if (k := keys[i]) is not None])
        return [Answered(r, wire.get(i)) for i, r in enumerate(results)]

    async def _verify_one(self, gate: AccessTokenClaims, scan: GateScan) -> VerifyDecision:
        """One scan the bulk path could not decide by itself (`verify_many`)."""
        try:
            return await self._pipeline.verify(gate, scan)
        except KeysBeingFetched as fetching:  # as POST /v1/codes/verify (docs/upstreams.md)
            if not await fetching.settled():
                raise  # the upload is answered 503 and sent again (its claims remember)
            return await self._pipeline.verify(gate, scan)

    @staticmethod
    def _key(gate_id: str, request_id: str) -> str:
        return f"upload:{gate_id}|{request_id}"


def _result(d: VerifyDecision) -> OfflineResult:
    if d.decision == "allow":
        return OfflineResult(d.request_id, "confirmed")
    if d.reason == "replayed" and d.first_use is not None:
        return OfflineResult(d.request_id, "double_use", first_use=d.first_use)
    return OfflineResult(d.request_id, "invalid", d.reason)


class Answered(NamedTuple):
    """A scan's result and, when this upload decided it, its JSON already written."""

    result: OfflineResult
    wire: str | None = None


def results_json(results: Sequence[OfflineResult | Answered]) -> dict[str, Any]:
    return {"results": [(r.result if isinstance(r, Answered) else r).to_json()
                        for r in results]}


def results_body(results: Sequence[Answered]) -> bytes:
    """The answer's bytes, ``{"results": [...]}``: each result's JSON joined as written (an
    upload of 500 was encoded twice over, once for the idempotency store and once for the
    answer)."""
    parts = [w if w is not None else r.dumps() for r, w in results]
    return ('{"results":[' + ",".join(parts) + "]}").encode()
