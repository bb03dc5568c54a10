"""The uploader against the contract's shape (CONTRACT "Offline gates": POST
/v1/gates/offline-scans, gate token, {"scans": [...]} of at most 1,000 → {"results": [...]}),
served by a small real HTTP server on loopback: batches, a gateway that drops out mid-upload,
resuming exactly where it stopped, and the journal's records as the contract's items.
(The end-to-end run against the real endpoint is tests/offline/test_done_when.py.)"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.codec.jws import JwsKey
from gateway_gate import Gate, Offline
from gateway_gate.gate import _scan


class Contract:
    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail_next: list[int] = []  # statuses to answer instead, in order
        self.seen: dict[str, dict[str, Any]] = {}


@pytest.fixture
def server() -> Iterator[tuple[str, Contract]]:
    state = Contract()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def _json(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/oauth2/token":
                auth = base64.b64decode(self.headers["Authorization"][6:]).decode()
                assert auth == "gate-1:s3cret" and b"grant_type=client_credentials" in body
                self._json(200, {"access_token": "tok", "token_type": "Bearer",
                                 "expires_in": 3600})
                return
            assert self.path == "/v1/gates/offline-scans"
            assert self.headers["Authorization"] == "Bearer tok"
            assert self.headers["Content-Type"] == "application/json"
            if state.fail_next:
                self._json(state.fail_next.pop(0), {"code": "unavailable"})
                return
            scans = json.loads(body)["scans"]
            assert 1 <= len(scans) <= 1000
            state.batches.append(scans)
            results = []
            for s in scans:
                assert set(s) in ({"request_id", "code", "scanned_at", "local_decision"},
                                  {"request_id", "card", "scanned_at", "local_decision"})
                state.seen.setdefault(s["request_id"], s)
                results.append({"request_id": s["request_id"], "status": "confirmed"})
            self._json(200, {"results": results})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


AT = "2026-12-02T06:00:00.000Z"


def _gate(tmp_path: Path, url: str) -> Gate:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    anchor = JwsKey.of(ed25519.Ed25519PrivateKey.generate().public_key())
    Gate.provision(tmp_path / "g", base_url=url, client_id="gate-1", client_secret="s3cret",
                   scene="metro", anchor_jwk=anchor.to_jwk())
    return Gate(tmp_path / "g", durable=False)


def test_batches_resume_and_items(tmp_path: Path, server: tuple[str, Contract]) -> None:
    url, state = server
    gate = _gate(tmp_path, url)
    for i in range(1100):  # what verify_code / tap journal, written directly
        if i % 10 == 0:
            gate.journal.append({"kind": "card", "request_id": f"r{i}", "decision": "allow",
                                 "reason": "ok", "face": "ssc_card", "scanned_at": AT,
                                 "card": {"card_no": "CQ100000025", "region": "CQ",
                                          "terminal_mac": "m"}})
        else:
            gate.journal.append({"kind": "code", "request_id": f"r{i}", "decision": "deny",
                                 "reason": "replayed", "face": "ykm", "code": f"YK1:{i}",
                                 "scanned_at": AT})
    state.fail_next = [503]  # the gateway is still coming up
    with pytest.raises(Offline):
        gate.upload()
    assert gate.pending() == 1100
    # the second batch fails: the first is kept, the rest resumes later
    state.fail_next = []
    report = gate.upload(max_batches=1)
    assert report.uploaded == 500 and report.remaining == 600
    state.fail_next = [502]
    with pytest.raises(Offline):
        gate.upload()
    report = gate.upload()
    assert report.uploaded == 600 and report.remaining == 0
    assert report.counts() == {"confirmed": 600}
    assert [len(b) for b in state.batches] == [500, 500, 100]
    sent = [s["request_id"] for b in state.batches for s in b]
    assert sent == [f"r{i}" for i in range(1100)]  # each once, in order
    assert state.seen["r0"]["card"] == {"card_no": "CQ100000025", "region": "CQ",
                                        "terminal_mac": "m"}
    assert state.seen["r1"] == {"request_id": "r1", "code": "YK1:1", "local_decision": "deny",
                                "scanned_at": AT}
    assert gate.upload().uploaded == 0  # nothing left
    # the answers are kept on the gate
    assert sum(1 for _ in gate.uploads.records()) == 1100
    gate.close()


def test_an_unreachable_gateway_is_offline(tmp_path: Path) -> None:
    from tests.redis_server import free_port

    gate = _gate(tmp_path, f"http://127.0.0.1:{free_port()}")
    gate.journal.append({"kind": "code", "request_id": "x", "decision": "allow", "reason": "ok",
                         "face": "ykm", "code": "YK1:", "scanned_at": "t"})
    with pytest.raises(Offline):
        gate.upload()
    assert gate.pending() == 1
    assert _scan({"kind": "code", "request_id": "x", "decision": "allow", "scanned_at": "t",
                  "code": "c"}) == {"request_id": "x", "code": "c", "scanned_at": "t",
                                    "local_decision": "allow"}
    gate.close()
