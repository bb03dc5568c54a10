"""The gate SDK's device deny-list (sdk/gateway_gate/devices.py) against the real app over real
HTTP: synced with deltas, verified against the pinned key, fail closed without it or past its
max age, tampering and rollback refused, a reboot keeps it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from gateway.web.codes import CODES
from tests.devices.conftest import Gateway, demo_person, enrolled, resident_token

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))

from gateway_gate import Gate, GateError, parse_device_deny_list  # noqa: E402

GATE = "gate-metro-l1-xiaoshizi"


def _provision(gw: Gateway, state: Path) -> Gate:
    Gate.provision(state, base_url=gw.base, client_id=GATE,
                   client_secret=gw.demo_secret(GATE)["client_secret"], scene="metro",
                   anchor_jwk=gw.app[CODES].trust.signing_key().to_jwk())
    return Gate(state, durable=False)


async def _remove(gw: Gateway, token: str, device_id: str) -> None:
    r = await gw.client.delete(f"/v1/me/devices/{device_id}",
                               headers={"Authorization": f"Bearer {token}"})
    assert r.status == 204


async def test_sync_deltas_revoked_offline_and_a_reboot(gw: Gateway, tmp_path: Path) -> None:
    token = resident_token(gw, await demo_person(gw))
    a, ans_a, _ = await enrolled(gw, token=token)
    b, ans_b, _ = await enrolled(gw, token=token)
    gate = _provision(gw, tmp_path / "g")
    with pytest.raises(GateError) as e:
        gate.verify_code(a.make_code())
    assert e.value.code == "no_trust_list"
    await asyncio.to_thread(gate.sync)
    assert gate.verify_code(a.make_code()).decision == "allow"
    await _remove(gw, token, ans_a["device_id"])
    report = await asyncio.to_thread(gate.sync)
    assert report.device_list_entries == 1
    first_version = report.device_list_version
    assert gate.verify_code(a.make_code()).reason == "revoked"
    assert gate.verify_code(b.make_code()).decision == "allow"
    await _remove(gw, token, ans_b["device_id"])
    report = await asyncio.to_thread(gate.sync)  # a delta from first_version
    assert report.device_list_entries == 2 and report.device_list_version > first_version
    assert gate.verify_code(b.make_code()).reason == "revoked"
    # a reboot: the list is read back from the state directory
    gate.close()
    gate = Gate(tmp_path / "g", durable=False)
    assert gate.devices is not None and len(gate.devices.entries) == 2
    assert gate.verify_code(a.make_code()).reason == "revoked"
    assert gate.status()["device_deny_list"]["entries"] == 2
    gate.close()


async def test_fail_closed_past_max_age_and_without_a_list(gw: Gateway, tmp_path: Path) -> None:
    phone, _, _ = await enrolled(gw)
    gate = _provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    assert gate.devices is not None
    code = phone.make_code()
    with pytest.raises(GateError) as e:
        gate.verify_code(code, now=gate.devices.expires_at + 1)
    assert e.value.code in ("device_list_expired", "trust_list_expired")
    gate.devices = None  # e.g. the file was removed
    with pytest.raises(GateError) as e:
        gate.verify_code(code)
    assert e.value.code == "no_device_list"
    gate.close()


async def test_tampered_or_older_lists_are_refused(gw: Gateway, tmp_path: Path) -> None:
    token = resident_token(gw, await demo_person(gw))
    _, ans, _ = await enrolled(gw, token=token)
    gate = _provision(gw, tmp_path / "g")
    await asyncio.to_thread(gate.sync)
    await _remove(gw, token, ans["device_id"])
    body = (await (await gw.client.get("/v1/revocations/devices", headers={
        "Authorization": f"Bearer {await gw.client_token(GATE)}"})).read())
    held = gate.devices
    ok = parse_device_deny_list(body, gate.anchor, None)
    assert list(ok.entries) == [ans["serial"]]
    # the clear copy in the envelope is not what counts: the signed payload is
    envelope = json.loads(body)
    envelope["deny_list"]["entries"] = []
    assert parse_device_deny_list(json.dumps(envelope).encode(), gate.anchor, None).entries
    # a flipped signature byte
    jws = envelope["jws"]
    envelope["jws"] = jws[:-2] + ("A" if jws[-2] != "A" else "B") + jws[-1]
    with pytest.raises(GateError) as e:
        parse_device_deny_list(json.dumps(envelope).encode(), gate.anchor, None)
    assert e.value.code == "bad_signature"
    # the card deny-list is not a device deny-list (typ and list name differ)
    cards = await (await gw.client.get("/v1/revocations/cards", headers={
        "Authorization": f"Bearer {await gw.client_token(GATE)}"})).read()
    with pytest.raises(GateError):
        parse_device_deny_list(cards, gate.anchor, None)
    # an older list than the one held: rollback
    assert held is not None
    newer = parse_device_deny_list(body, gate.anchor, held)
    with pytest.raises(GateError) as e:
        parse_device_deny_list((await (await gw.client.get(
            "/v1/revocations/devices", headers={
                "Authorization": f"Bearer {await gw.client_token(GATE)}"})).read()),
            gate.anchor, type(newer)(newer.version + 1, newer.issued_at, newer.next_update,
                                     newer.expires_at, dict(newer.entries)))
    assert e.value.code == "rollback"
    gate.close()
