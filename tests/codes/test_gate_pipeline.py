"""The gate decision pipeline as a use case, over in-memory ports (no web, no Redis): the same
steps and the same decision for codes and card taps (gateway/services/gate.py)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import pytest

from gateway.adapters.memory import MemoryClientStore, MemorySingleUse
from gateway.adapters.memory_records import MemoryRecordingClaims, MemoryRecordStore
from gateway.authz.clients import Client
from gateway.authz.datakeys import DataKeys
from gateway.authz.tokens import AccessTokenClaims
from gateway.clock import FrozenClock
from gateway.codec import (
    Ed25519Signer,
    Es256Signer,
    VerificationKey,
    decode,
    encode_essc,
    encode_ykm,
)
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.services import faces
from gateway.services.codes import seal_attributes
from gateway.services.decision import VerifyDecision
from gateway.services.faces import CardFace, CodeFace
from gateway.services.gate import CardTap, GatePipeline, GateScan, GateSectors
from gateway.services.scenes import SceneCatalogue
from gateway.services.upstream import PsamAttestation, compute_terminal_mac
from gateway.timefmt import rfc3339

PSAM_MASTER = hashlib.sha256(b"gate pipeline unit test psam").digest()
YKM = Ed25519Signer.from_seed(hashlib.sha256(b"gate pipeline unit test ykm").digest())
ESSC = Es256Signer.from_scalar(hashlib.sha256(b"gate pipeline unit test essc").digest(),
                               kid="cq-test-1")
ALICE = "a1" * 16
BOB = "b2" * 16


class MemoryGateIdentity:
    """GateIdentity over dicts, counting the reads the pipeline makes."""

    def __init__(self) -> None:
        self.attributes: dict[str, dict[str, Any]] = {
            ALICE: {"concession": "senior", "adult": True, "name_masked": "张*"},
            BOB: {"concession": None, "adult": False, "name_masked": "李*"}}
        self.essc = {("CQ", "holder-alice"): ALICE}
        self.cards = {("CQ", "CQ100000025"): ALICE}
        self.suspended: set[str] = set()
        self.reads: list[str] = []

    def is_suspended(self, person_id: str) -> bool:
        return person_id in self.suspended

    async def person_by_essc(self, region: str, holder_account_id: str) -> str | None:
        self.reads.append("essc")
        return self.essc.get((region, holder_account_id))

    async def card_holder(self, region: str, card_no: str) -> tuple[str, Any] | None:
        self.reads.append("card")
        pid = self.cards.get((region, card_no))
        return None if pid is None else (pid, self.attributes[pid])

    async def disclose(self, person_id: str, names: Sequence[str]) -> dict[str, Any]:
        self.reads.append("disclose")
        if person_id not in self.attributes:
            raise NotFound("No such person")
        return {n: self.attributes[person_id].get(n) for n in names}

    def disclose_from(self, record: Any, names: Sequence[str]) -> dict[str, Any]:
        return {n: record.get(n) for n in names}


class World:
    def __init__(self) -> None:
        self.clock = FrozenClock(1_800_000_000.0)
        self.keys = DataKeys(secrets.token_bytes(32))
        self.identity = MemoryGateIdentity()
        self.trust = {("ykm", YKM.kid): VerificationKey.of("ykm", YKM.public_key()),
                      ("essc:CQ", ESSC.kid): VerificationKey.of("essc:CQ", ESSC.public_key(),
                                                                ESSC.kid)}
        self.lookups = 0
        self.clients = MemoryClientStore()
        self.decisions: list[VerifyDecision] = []
        self.subjects: list[tuple[str, str, str]] = []
        self.once = MemorySingleUse(self.clock)
        self.records = MemoryRecordStore()
        self.pipeline = GatePipeline(
            scenes=SceneCatalogue.load(), sectors=GateSectors(self.clients, self.clock.now),
            codes=CodeFace(lookup=self.lookup, holder=self.keys.code_holder,
                           identity=self.identity, max_skew_s=5),
            cards=CardFace(psam=PsamAttestation(master_key=PSAM_MASTER),
                           identity=self.identity, regions=("CQ", "SC")),
            claims=MemoryRecordingClaims(self.once, self.records), identity=self.identity,
            data_keys=self.keys,
            subject_seen=self.seen, count=self.decisions.append, clock=self.clock)

    def lookup(self, issuer: str, kid: str) -> VerificationKey | None:
        self.lookups += 1
        return self.trust.get((issuer, kid))

    async def seen(self, sector: str, subject: str, person_id: str) -> None:
        self.subjects.append((sector, subject, person_id))

    async def gate(self, client_id: str, scene: str, sector: str = "metro-sector",
                   disabled: bool = False) -> AccessTokenClaims:
        await self.clients.put(Client(client_id=client_id, kind="gate", display_name=client_id,
                                      scopes=("codes:verify", "cards:verify"), sector=sector,
                                      scene=scene, disabled=disabled))
        now = int(self.clock.now())
        return AccessTokenClaims(jti=secrets.token_hex(8), client_id=client_id, kind="gate",
                                 sub=client_id, scopes=frozenset({"codes:verify"}),
                                 exp=now + 600, iat=now, scene=scene)

    def ykm(self, person_id: str = ALICE, sealed: bool = True, lifetime_s: int = 30) -> str:
        nonce = secrets.token_bytes(12)
        attributes = self.identity.attributes[person_id] if sealed else {}
        holder, flags = self.keys.code_holder.seal(person_id, nonce,
                                                   seal_attributes(attributes))
        return encode_ykm(holder=holder, issued_at=int(self.clock.now()), lifetime_s=lifetime_s,
                          signer=YKM, nonce=nonce, flags=flags)

    def essc(self, holder: str = "holder-alice") -> str:
        return encode_essc(region="CQ", holder=holder.encode(),
                           issued_at=int(self.clock.now()), lifetime_s=30, signer=ESSC)

    def tap(self, gate: str, request_id: str, card_no: str = "CQ100000025",
            scanned_at: float | None = None) -> CardTap:
        at = rfc3339(self.clock.now() if scanned_at is None else scanned_at)
        mac = compute_terminal_mac(PSAM_MASTER, card_no=card_no, region="CQ",
                                   gate_client_id=gate, request_id=request_id, scanned_at=at)
        return CardTap(card_no=card_no, region="CQ", terminal_mac=mac, scanned_at=at)


@pytest.fixture
def world() -> World:
    return World()


async def test_ykm_allow_then_replay_and_idempotent_retry(world: World) -> None:
    gate = await world.gate("gate-1", "metro")
    other = await world.gate("gate-2", "metro")
    code = world.ykm()
    first = await world.pipeline.verify(gate, GateScan("metro", "r-1", code))
    assert (first.decision, first.reason, first.face) == ("allow", "ok", "ykm")
    assert first.subject == world.keys.pairwise_subject("metro-sector", ALICE)
    assert first.attributes == {"concession": "senior"}
    assert world.identity.reads == []  # sealed in the code: no identity read
    world.clock.advance(2)
    retry = await world.pipeline.verify(gate, GateScan("metro", "r-1", code))
    assert retry.to_json() == first.to_json()  # the first answer, its verified_at too
    replay = await world.pipeline.verify(other, GateScan("metro", "r-9", code))
    assert (replay.decision, replay.reason, replay.face) == ("deny", "replayed", "ykm")
    again = await world.pipeline.verify(gate, GateScan("metro", "r-2", code))
    assert again.reason == "replayed"
    assert [d.reason for d in world.decisions] == ["ok", "ok", "replayed", "replayed"]
    # the decision carries what a transaction record needs
    assert (first.gate, first.scene, replay.gate) == ("gate-1", "metro", "gate-2")
    assert first.use_hash is not None and first.use_hash == replay.use_hash


async def test_expired_code_is_decoded_once_and_a_retry_still_answered(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes: list[str] = []

    def counting_decode(code: str) -> Any:
        decodes.append(code)
        return decode(code)

    monkeypatch.setattr(faces, "decode", counting_decode)
    gate = await world.gate("gate-1", "metro")
    code = world.ykm(lifetime_s=10)
    first = await world.pipeline.verify(gate, GateScan("metro", "r-1", code))
    assert first.decision == "allow"
    world.clock.advance(20)  # past lifetime + skew, within the retry grace
    lookups, decoded = world.lookups, len(decodes)
    late = await world.pipeline.verify(gate, GateScan("metro", "r-1", code))
    assert late.to_json() == first.to_json()
    other = await world.pipeline.verify(gate, GateScan("metro", "r-2", code))
    assert (other.decision, other.reason, other.face) == ("deny", "expired", "ykm")
    # per request: one decode, one key lookup (one signature check)
    assert (world.lookups - lookups, len(decodes) - decoded) == (2, 2)
    never_used = world.ykm(lifetime_s=10)
    world.clock.advance(20)
    assert (await world.pipeline.verify(gate, GateScan("metro", "r-3", never_used))).reason \
        == "expired"


async def test_scene_is_checked_once_before_the_credential(world: World) -> None:
    gate = await world.gate("gate-1", "metro")
    with pytest.raises(InvalidRequest):
        await world.pipeline.verify(gate, GateScan("nowhere", "r", world.ykm()))
    with pytest.raises(Forbidden):
        await world.pipeline.verify(gate, GateScan("library", "r", world.ykm()))
    with pytest.raises(Forbidden):
        await world.pipeline.verify(gate, GateScan("library", "r", world.tap("gate-1", "r")))
    assert world.decisions == []  # request errors are not decisions


async def test_attributes_not_sealed_are_read_beside_the_claim(world: World) -> None:
    gate = await world.gate("gate-h", "hotel", sector="hotel-sector")
    d = await world.pipeline.verify(gate, GateScan("hotel", "r", world.ykm(sealed=False)))
    assert (d.decision, d.attributes) == ("allow", {"name_masked": "张*"})
    assert world.identity.reads == ["disclose"]
    del world.identity.attributes[BOB]
    gone = await world.pipeline.verify(gate, GateScan("hotel", "r2", world.ykm(BOB, False)))
    assert (gone.decision, gone.reason) == ("deny", "revoked")


async def test_essc_code_person_and_region_policy(world: World) -> None:
    gate = await world.gate("gate-1", "metro")
    d = await world.pipeline.verify(gate, GateScan("metro", "r", world.essc()))
    assert (d.decision, d.face, d.attributes) == ("allow", "essc", {"concession": "senior"})
    assert d.subject == world.keys.pairwise_subject("metro-sector", ALICE)
    unlinked = await world.pipeline.verify(gate, GateScan("metro", "r2",
                                                          world.essc("holder-nobody")))
    assert (unlinked.reason, unlinked.face) == ("revoked", "essc")


async def test_card_tap_is_the_same_pipeline(world: World) -> None:
    gate = await world.gate("gate-1", "metro")
    tap = world.tap("gate-1", "t-1")
    first = await world.pipeline.verify(gate, GateScan("metro", "t-1", tap))
    assert (first.decision, first.face, first.attributes) == ("allow", "ssc_card",
                                                              {"concession": "senior"})
    assert first.subject == world.keys.pairwise_subject("metro-sector", ALICE)
    assert first.scanned_at == world.clock.now()
    assert world.identity.reads == ["card"]  # attributes from the record read with the card
    world.clock.advance(1)
    again = await world.pipeline.verify(gate, GateScan("metro", "t-1", tap))
    assert again.to_json() == first.to_json()
    forged = CardTap(card_no=tap.card_no, region="CQ", terminal_mac="A" + tap.terminal_mac[1:],
                     scanned_at=tap.scanned_at)
    bad = await world.pipeline.verify(gate, GateScan("metro", "t-2", forged))
    assert (bad.decision, bad.reason, bad.face) == ("deny", "bad_signature", "ssc_card")
    # judged at its scan time (issue 14): two minutes old is a buffered tap, not a stale one
    buffered = world.tap("gate-1", "t-3", scanned_at=world.clock.now() - 120)
    assert (await world.pipeline.verify(gate, GateScan("metro", "t-3", buffered))).reason == \
        "ok"
    old = world.tap("gate-1", "t-5", scanned_at=world.clock.now() - 901)
    assert (await world.pipeline.verify(gate, GateScan("metro", "t-5", old))).reason == \
        "expired"
    unknown = world.tap("gate-1", "t-4", card_no="CQ100000033")
    assert (await world.pipeline.verify(gate, GateScan("metro", "t-4", unknown))).reason == \
        "revoked"


async def test_suspended_person_and_disabled_gate(world: World) -> None:
    gate = await world.gate("gate-1", "metro")
    world.identity.suspended.add(ALICE)
    for scan in (GateScan("metro", "a", world.ykm()), GateScan("metro", "b", world.essc()),
                 GateScan("metro", "c", world.tap("gate-1", "c"))):
        d = await world.pipeline.verify(gate, scan)
        assert (d.decision, d.reason) == ("deny", "revoked")
    world.identity.suspended.clear()
    off = await world.gate("gate-off", "metro", disabled=True)
    d = await world.pipeline.verify(off, GateScan("metro", "d", world.ykm()))
    assert (d.decision, d.reason) == ("deny", "scene_not_permitted")
    assert world.subjects == []  # no subject handed out by a deny


async def test_malformed_and_foreign_faces(world: World) -> None:
    gate = await world.gate("gate-1", "metro")
    for junk in ("", "YK1:" + "A" * 40, "hello"):
        d = await world.pipeline.verify(gate, GateScan("metro", "m", junk))
        assert (d.decision, d.reason, d.face) == ("deny", "malformed", None)
    # the internet café takes no cards (130号 row 6: 渝快码 only; hotels do, 73号 row 11)
    gate_h = await world.gate("gate-h", "internet_cafe")
    d = await world.pipeline.verify(gate_h, GateScan("internet_cafe", "h",
                                                     world.tap("gate-h", "h")))
    assert (d.decision, d.reason, d.face) == ("deny", "scene_not_permitted", "ssc_card")
