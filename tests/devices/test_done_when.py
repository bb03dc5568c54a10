"""Issue 18 "Done when", tried as a new user would, with real processes: a real gateway
(`python -m gateway serve`, real Redis), the reference phone (loadtests/phone.py) and the gate
SDK (gateway_gate, sdk/) over real HTTP on loopback.

A demo resident's phone enrols; the gateway is stopped; the phone makes 50 codes and the gate
lets all 50 through offline and denies a replay; a copy used at a second offline gate shows up
as `double_use` on upload; the gateway is back, the device is removed, the gate syncs, the
phone's next code is `revoked`; the same kind of code verifies online."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.adapters.keyfiles import KeyRingFiles
from gateway.codec.jws import JwsKey
from loadtests.phone import Phone, sandbox_resident_token
from tests.devices.test_phone_cli import _server, _verify
from tests.redis_server import free_port

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK_DIR) not in sys.path:  # the SDK is its own distribution (sdk/pyproject.toml)
    sys.path.insert(0, str(SDK_DIR))

from gateway_gate import Gate, Offline  # noqa: E402

GATE = "gate-metro-l1-xiaoshizi"
GATE_B = "gate-bus-route-111"  # a bus reader: ykm too, a secret-based gate like GATE


def _anchor(keys: Path) -> dict[str, Any]:
    """What `gateway keys trust-anchor` prints: the trust-list key a gate pins (carried to
    the gate out of band, docs/offline.md §2)."""
    r = subprocess.run([sys.executable, "-m", "gateway", "keys", "trust-anchor"],
                       env={"GATEWAY_KEYS_DIR": str(keys), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=60, check=True)
    jwk = dict(json.loads(r.stdout))
    ring = KeyRingFiles(keys, "trust").load()
    assert jwk == JwsKey.of(ring.current().private_key.public_key()).to_jwk()
    return jwk


@pytest.mark.slow
async def test_done_when(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keys = tmp_path / "keys"
    phone = Phone.new("EdDSA", state_path=tmp_path / "phone.json")
    with _server(tmp_path, redis_url, port, 1):
        async with aiohttp.ClientSession() as http:
            token = await sandbox_resident_token(http, base, "r-zhang-wei")
            enrolled = await phone.enrol(http, token, base)
        secret = json.loads((keys / "sandbox/demo-secrets.json").read_text())[GATE]
        Gate.provision(tmp_path / "gate", base_url=base, client_id=GATE,
                       client_secret=secret["client_secret"], scene="metro",
                       anchor_jwk=_anchor(keys))
        gate = Gate(tmp_path / "gate")
        report = await asyncio.to_thread(gate.sync)
        assert report.device_list_entries == 0
        other = GATE_B
        Gate.provision(tmp_path / "gate-b", base_url=base, client_id=other,
                       client_secret=json.loads((keys / "sandbox/demo-secrets.json")
                                                .read_text())[other]["client_secret"],
                       scene="bus", anchor_jwk=_anchor(keys))
        gate_b = Gate(tmp_path / "gate-b")
        await asyncio.to_thread(gate_b.sync)
    # -- the gateway is stopped: neither the phone nor the gate can reach it
    with pytest.raises(Offline):
        await asyncio.to_thread(gate.sync)
    codes = [phone.make_code() for _ in range(50)]
    results = [gate.verify_code(c) for c in codes]
    assert [(r.decision, r.reason, r.face) for r in results] == [("allow", "ok", "ykm")] * 50
    replay = gate.verify_code(codes[17])
    assert (replay.decision, replay.reason) == ("deny", "replayed")
    # a code signed by a thief's key over the phone's (public) certificate makes nothing
    from gateway.codec import encode_yk2

    assert phone.certificate is not None
    thief = Phone.new("EdDSA")
    forged = encode_yk2(certificate=phone.certificate, issued_at=phone.now(), lifetime_s=30,
                        counter=10_000, signer=thief.signer)
    assert gate.verify_code(forged).reason == "bad_signature"
    # a copy of three of the codes shown at a second offline gate: allowed there (its own
    # replay cache), caught when both gates upload (below)
    copies = [gate_b.verify_code(c) for c in codes[:3]]
    assert [r.decision for r in copies] == ["allow"] * 3
    # -- the gateway is back; the resident removes the phone; the gate syncs
    with _server(tmp_path, redis_url, port, 2):
        up_a = await asyncio.to_thread(gate.upload)
        assert up_a.uploaded == 52 and up_a.counts()["confirmed"] == 50
        assert up_a.counts()["double_use"] == 1  # the replayed code
        up_b = await asyncio.to_thread(gate_b.upload)
        assert [r["status"] for r in up_b.results] == ["double_use"] * 3
        assert {r["first_use"]["gate"] for r in up_b.results} == {GATE}
        gate_b.close()
        async with aiohttp.ClientSession() as http:
            token = await sandbox_resident_token(http, base, "r-zhang-wei")
            async with http.delete(f"{base}/v1/me/devices/{enrolled['device_id']}",
                                   headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 204
        report = await asyncio.to_thread(gate.sync)
        assert report.device_list_entries == 1
        nxt = gate.verify_code(phone.make_code())
        assert (nxt.decision, nxt.reason) == ("deny", "revoked")
        # online: the removed phone's code is revoked (the worker that answered the DELETE
        # at once, the other within about a second: docs/devices.md); a new phone's code of
        # the same kind verifies; and its replay is replayed
        await asyncio.sleep(2.0)  # one refresh period (1 s) of the other worker, and margin
        for _ in range(6):  # a new connection each: both workers answer
            assert (await _verify(base, keys, phone.make_code()))["reason"] == "revoked"
        fresh = Phone.new("ES256")
        async with aiohttp.ClientSession() as http:
            await fresh.enrol(http, token, base)
        code = fresh.make_code()
        first = await _verify(base, keys, code)
        assert (first["decision"], first["reason"], first["face"]) == ("allow", "ok", "ykm")
        assert (await _verify(base, keys, code))["reason"] == "replayed"
        # the new phone's code passes the gate offline too (same trust list, no resync)
        assert gate.verify_code(fresh.make_code()).decision == "allow"
    # the gate's journal holds every scan for upload (no code string beyond the journal)
    journal = (tmp_path / "gate" / "journal.log").read_bytes().splitlines()
    assert len(journal) == 50 + 1 + 1 + 1 + 1
    gate.close()
