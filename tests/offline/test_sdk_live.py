"""The SDK against the real gateway over real HTTP (loopback): provision, sync, verify offline,
replays across a reboot, CR/LF the same online and offline, card taps on the deny-list, fail
closed past max age, tampered files on disk, a trust-key rotation followed."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.keyfiles import KeyRingFiles
from gateway.app import CORE
from gateway.codec import decode
from gateway.web.codes import CODES
from gateway_gate import Gate, GateError
from tests.codes.conftest import demo_person, issue, resident_token
from tests.identity.conftest import Api, bearer
from tests.web.conftest import Gateway

GATE = "gate-metro-l1-xiaoshizi"


def provision(gw: Gateway, state: Path, scene: str = "metro", gate: str = GATE) -> Gate:
    Gate.provision(state, base_url=gw.base, client_id=gate,
                   client_secret=gw.demo_secret(gate)["client_secret"], scene=scene,
                   anchor_jwk=gw.app[CODES].trust.signing_key().to_jwk())
    return Gate(state)


async def fresh_code(gw: Gateway, resident: str = "r-zhang-wei") -> str:
    token = resident_token(gw, await demo_person(gw, resident))
    return str((await (await issue(gw, token)).json())["code"])


async def online(gw: Gateway, code: str, scene: str = "metro") -> dict[str, Any]:
    token = await gw.client_token(GATE)
    r = await gw.client.post("/v1/codes/verify", json={
        "code": code, "scene": scene, "request_id": secrets.token_hex(8)},
        headers=bearer(token))
    assert r.status == 200
    return dict(await r.json())


async def test_sync_verify_replay_reboot_and_crlf(gw: Gateway, tmp_path: Path) -> None:
    gate = provision(gw, tmp_path / "g")
    with pytest.raises(GateError) as e:
        gate.verify_code(await fresh_code(gw))
    assert e.value.code == "no_trust_list"  # fail closed before the first sync
    await gw.app[CODES].refresh_essc_keys()  # as the background refresh does at start
    report = await asyncio.to_thread(gate.sync)
    assert report.trust_list_changed and report.deny_list_entries >= 2
    again = await asyncio.to_thread(gate.sync)  # If-None-Match: 304, nothing changes
    assert not again.trust_list_changed and again.trust_list_version == report.trust_list_version
    code = await fresh_code(gw)
    first = gate.verify_code(code)
    assert (first.decision, first.reason, first.face) == ("allow", "ok", "ykm")
    assert gate.verify_code(code).reason == "replayed"
    # a reboot inside the code's life: still a replay
    gate.close()
    gate = Gate(tmp_path / "g")
    assert gate.verify_code(code).reason == "replayed"
    # a scanner's CR LF: trimmed, online and offline alike
    c2 = await fresh_code(gw)
    assert gate.verify_code(c2 + "\r\n").decision == "allow"
    assert (await online(gw, (await fresh_code(gw)) + "\r\n"))["decision"] == "allow"
    assert gate.verify_code((await fresh_code(gw)) + " ").reason == "malformed"
    assert (await online(gw, (await fresh_code(gw)) + " "))["reason"] == "malformed"
    # a code whose bytes were changed
    c3 = await fresh_code(gw)
    assert gate.verify_code(c3[:-3] + ("AAA" if c3[-3:] != "AAA" else "BBB")).decision == "deny"
    journal = [json.loads(line[9:]) for line in
               (tmp_path / "g" / "journal.log").read_bytes().splitlines()]
    assert [j["reason"] for j in journal][:3] == ["ok", "replayed", "replayed"]
    assert all(j["kind"] == "code" for j in journal)
    gate.close()


async def test_max_age_fails_closed(gw: Gateway, tmp_path: Path) -> None:
    gate = provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    assert gate.trust is not None and gate.deny is not None
    code = await fresh_code(gw)
    late = gate.trust.expires_at + 1
    with pytest.raises(GateError) as e:
        gate.verify_code(code, now=late)
    assert e.value.code == "trust_list_expired" and "refuses" in e.value.message
    with pytest.raises(GateError) as e:
        gate.tap("CQ100000025", "CQ", "mac", now=gate.deny.expires_at + 1)
    assert e.value.code in ("deny_list_expired", "trust_list_expired")
    assert gate.pending() == 0  # nothing judged, nothing journaled
    gate.close()


async def test_taps_on_the_deny_list(api: Api, tmp_path: Path) -> None:
    gw = api.gw
    gate = provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    assert gate.tap("CQ100000249", "CQ", "m").reason == "revoked"  # lost in the demo data
    assert gate.tap("CQ100000017", "CQ", "m").reason == "revoked"  # replaced
    assert gate.tap("CQ100000579", "CQ", "m").decision == "allow"
    assert gate.tap("SC100000579", "CQ", "m").reason == "malformed"
    # report-loss, sync (a delta), denied
    token = await api.resident_token("r-wang-lei", "ykb")
    me = await (await api.c.get("/v1/me", headers=bearer(token))).json()
    card = next(c for c in me["credentials"] if c["kind"] == "ssc_card")
    await api.c.post(f"/v1/me/cards/{card['id']}/report-loss", headers=bearer(token))
    before = gate.deny.version if gate.deny else 0
    report = await asyncio.to_thread(gate.sync)
    assert report.deny_list_version > before
    assert gate.tap("CQ100000579", "CQ", "m").reason == "revoked"
    # an internet café takes no card taps: scene_not_permitted offline as online (hotels
    # take the physical card since the catalogue follows 73号 row 11)
    hotel = provision(gw, tmp_path / "h", scene="internet_cafe")
    await asyncio.to_thread(hotel.sync)
    assert hotel.tap("CQ100000025", "CQ", "m").reason == "scene_not_permitted"
    gate.close()
    hotel.close()


async def test_tampered_state_on_disk_is_not_believed(gw: Gateway, tmp_path: Path) -> None:
    gate = provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    gate.close()
    f = tmp_path / "g" / "trust-list.json"
    body = json.loads(f.read_bytes())
    body["jws"] = body["jws"][:-4] + ("AAAA" if body["jws"][-4:] != "AAAA" else "BBBB")
    f.write_text(json.dumps(body))
    gate = Gate(tmp_path / "g")
    assert gate.trust is None
    with pytest.raises(GateError):
        gate.verify_code(await fresh_code(gw))
    gate.close()


async def test_trust_key_rotation_is_followed(gw: Gateway, tmp_path: Path) -> None:
    gate = provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    pinned = gate.anchor.kid
    core = gw.app[CORE]
    files = KeyRingFiles(gw.settings.keys_dir, "trust")
    files.rotate(time.time(), 3600)  # gateway keys rotate --purpose trust
    assert core.trust_ring is not None
    core.trust_ring.reload_if_changed()
    report = await asyncio.to_thread(gate.sync)
    assert report.anchor_kid != pinned
    assert report.anchor_kid == core.trust_ring().current().kid
    assert json.loads((tmp_path / "g" / "anchor.jwk").read_text())["kid"] == report.anchor_kid
    assert gate.verify_code(await fresh_code(gw)).decision == "allow"
    gate.close()


async def test_the_gm_suite_offline(make_gateway: Any, tmp_path: Path) -> None:
    """GATEWAY_CRYPTO_SUITE=gm: an SM2 trust-list key, SM2 codes; the SDK pins the SM2 key,
    verifies the SM2-signed lists and lets an SM2 code through offline, once."""
    gw = await make_gateway(crypto_suite="gm")
    anchor = gw.app[CODES].trust.signing_key()
    assert anchor.alg == "SM2" and anchor.to_jwk()["crv"] == "SM2"
    gate = provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    code = await fresh_code(gw)
    assert decode(code).claims.alg == "SM2"
    first = gate.verify_code(code)
    assert (first.decision, first.face) == ("allow", "ykm")
    assert gate.verify_code(code).reason == "replayed"
    assert gate.tap("CQ100000249", "CQ", "m").reason == "revoked"
    gate.close()
