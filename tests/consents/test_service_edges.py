"""Service-level edges the sandbox library never produces: a certificate with fields beyond its
type's list (withheld, audited), and a library outage (the use is given back). The stores are
the in-memory ones (they pass the same contract suite as Redis); the library is a small
CertificateLibrary implementation standing in for an upstream that misbehaves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway.adapters.keyfiles import KeyRingFiles
from gateway.adapters.memory import MemoryClientStore
from gateway.adapters.memory_audit import MemoryAuditLog
from gateway.adapters.memory_consent import MemoryConsentStore
from gateway.authz.clients import Client
from gateway.authz.datakeys import DataKeys
from gateway.authz.tokens import JwtSigner
from gateway.clock import FrozenClock
from gateway.errors import UpstreamUnavailable
from gateway.services.audit import AuditTrail, verify_chain
from gateway.services.consents import ConsentService, RefusedForbidden
from gateway.services.upstream import Certificate


class Library:
    def __init__(self) -> None:
        self.fail = False
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    async def fetch(self, citizen_id: str, types: Sequence[str]) -> list[Certificate]:
        self.calls.append((citizen_id, tuple(types)))
        if self.fail:
            raise UpstreamUnavailable("library down")
        return [Certificate("degree", "D-1", "某大学", {"name": "李娜", "degree": "学士",
                                                        "major": "法学"}, "jws.a.b", 1),
                Certificate("qualification", "Q-1", "某厅", {"name": "李娜", "title": "x",
                                                            "citizen_id": "leak"}, "jws.c.d", 1)]


@pytest.fixture
async def setup(tmp_path: Path) -> tuple[ConsentService, Library, Client]:
    clock = FrozenClock()
    files = KeyRingFiles(tmp_path, "token")
    files.ensure("ES256", clock.now())
    ring = files.load()
    clients = MemoryClientStore()
    rp = Client(client_id="rp-service-hall", kind="rp", display_name="hall",
                sector="cq-service-halls")
    await clients.put(rp)
    lib = Library()

    async def citizen_ids(pid: str) -> str | None:
        return "50010619900101001X" if pid == "p-1" else None

    svc = ConsentService(
        store=MemoryConsentStore(clock), audit=AuditTrail(MemoryAuditLog(b"a" * 32), clock.now),
        library=lib, citizen_ids=citizen_ids, data_keys=DataKeys(b"k" * 32),
        signer=JwtSigner(lambda: ring, clock.now), clients=clients,
        issuer="https://gw.example", clock=clock.now)
    return svc, lib, rp


async def _authorised(svc: ConsentService, rp: Client, max_uses: int = 1) -> str:
    sub = svc.keys.pairwise_subject(rp.sector, "p-1")
    await svc.remember_subject(rp.sector, sub, "p-1")
    consent, _ = await svc.request(rp, {"subject": sub,
                                        "certificate_types": ["degree", "qualification"],
                                        "purpose": "入职核验", "max_uses": max_uses})
    await svc.approve("p-1", consent.id, "app-ykb", "app-sub")
    return consent.id


async def test_certificate_with_extra_fields_is_withheld_and_audited(setup) -> None:  # type: ignore[no-untyped-def]
    svc, _, rp = setup
    cid = await _authorised(svc, rp)
    certs = await svc.query(rp.client_id, cid, None)
    assert [c["type"] for c in certs] == ["degree"]
    entries = list(await svc.audit.log.entries())
    withheld = [e for e in entries if e["reason"] == "fields_not_allowed"]
    assert len(withheld) == 1 and withheld[0]["types"] == ["qualification"]
    assert entries[-1]["action"] == "consent.fetched" and entries[-1]["types"] == ["degree"]
    assert "50010619900101001X" not in str(entries)
    assert verify_chain(entries, key=b"a" * 32) == (True, None)


async def test_library_outage_gives_the_use_back(setup) -> None:  # type: ignore[no-untyped-def]
    svc, lib, rp = setup
    cid = await _authorised(svc, rp, max_uses=1)
    lib.fail = True
    with pytest.raises(UpstreamUnavailable):
        await svc.query(rp.client_id, cid, ["degree"])
    consent = await svc.store.get(cid)
    assert consent is not None and consent.uses == 0 and consent.status == "authorised"
    lib.fail = False
    assert await svc.query(rp.client_id, cid, ["degree"])
    with pytest.raises(RefusedForbidden) as exc:
        await svc.query(rp.client_id, cid, ["degree"])
    assert exc.value.reason == "exhausted"
    assert [t for _, t in lib.calls] == [("degree",), ("degree",)]
