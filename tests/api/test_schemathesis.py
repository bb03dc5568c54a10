"""Schemathesis (an independent property-based API tester) runs every operation of
docs/openapi.yaml against the live gateway — real port, real Redis, every principal's real
token — with all its checks: status codes, media types, headers and bodies as the spec says,
schema-valid requests accepted, schema-invalid ones refused, no 5xx. Issue 16 (finding 9):
it found the spec and the server disagreeing; it must find nothing.

Fixed seed and a bounded number of examples per operation: the run is reproducible and ends
by itself. Rate limits are lifted (the tester sends a few thousand requests from 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.api.conftest import SPEC_PATH
from tests.oidc.conftest import OP
from tests.web.conftest import GatewayFactory

ST = Path(sys.executable).with_name("st")
SEED = 160016
EXAMPLES = int(os.environ.get("GATEWAY_TEST_SCHEMATHESIS_EXAMPLES", "20"))
UNLIMITED = "1000000/1/1000000"
#: What schemathesis expects for a schema-valid request (its default).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
#: Operations the spec names that no route serves yet (tests/api/test_parity.py fails for
#: them too); each comes off this list when its route lands.
NOT_YET_SERVED: list[tuple[str, str]] = []
#: What it accepts as the refusal of a schema-invalid request (its default, and 413).
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429",
            "5xx"]
#: Operations whose schema-valid requests may still be refused for a reason no schema can
#: state, each documented in docs/openapi.yaml (and the CONTRACT) as such: (ids, status, why).
SEMANTIC_REFUSALS = [
    (("postToken", "postRevoke", "postIntrospect", "postPushedAuthorizationRequest",
      "postDeviceAuthorization", "postDeviceCardTap", "postDeviceCardConfirm"), "400",
     "RFC 6749 5.2: every grant error (invalid_grant, invalid_scope, ...) is 400"),
    (("scanDeviceAuthorization",), "400", "RFC 8628 6.1: text that cannot be a user code"),
    (("getEndSession", "postEndSession"), "400",
     "RP-Initiated Logout: a hint that is not our ID token, an unregistered target: 400 page"),
    (("getAuthorize",), "400",
     "RFC 6749 4.1.2.1: an unknown client or unregistered redirect URI is a 400 page"),
    (("verifyCode", "verifyCard"), "400", "CONTRACT: a scene not in the catalogue is 400"),
    (("registerClient",), "400",
     "per-kind rules: a gate's scene, an RP's redirect URIs, the kind's scopes, `none`"),
    (("linkCredential",), "400", "an upstream assertion that does not verify is 400"),
    (("issueCode",), "406", "an Accept naming none of JSON, PNG, SVG is 406"),
    (("enrolDevice",), "400", "a public key that is no point of its curve, a bad proof: 400"),
]


async def _userinfo_token(op: OP) -> str:
    token = await op.resident("r-li-na")
    req = op.auth_request(scope="openid profile essc")
    redirect_to = await op.login(req, token)
    from urllib.parse import parse_qs, urlsplit
    code = parse_qs(urlsplit(redirect_to).query)["code"][0]
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": "http://127.0.0.1:8400/callback",
                                   "code_verifier": req.verifier})
    assert status == 200, body
    return str(body["access_token"])


@pytest.mark.timeout(660)   # about 60-140 s on the shared 2-core box (20 examples/operation)
async def test_schemathesis_finds_no_failure(make_gateway: GatewayFactory, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    assert ST.exists(), "schemathesis is a test dependency (pyproject [test])"
    for kind in ("GATE", "APP_ISSUE", "RP", "RESIDENT", "LOGIN_IP", "OAUTH_IP", "USER_CODE"):
        monkeypatch.setenv(f"GATEWAY_RATELIMIT_{kind}", UNLIMITED)
    gw = await make_gateway()
    op = OP(gw)
    secret = gw.demo_secret("rp-service-hall")["client_secret"]
    auth = {
        "gateToken": {"bearer": await gw.client_token("gate-metro-l1-xiaoshizi")},
        "residentToken": {"bearer": await gw.resident_token("r-zhang-wei")},
        "rpToken": {"bearer": await gw.client_token("rp-service-hall")},
        "userInfoToken": {"bearer": await _userinfo_token(op)},
        "adminToken": {"bearer": (gw.settings.keys_dir / "sandbox" / "admin-token")
                       .read_text().strip()},
        "clientSecretBasic": {"username": "rp-service-hall", "password": secret},
    }
    config = tmp_path / "schemathesis.toml"
    lines = [f'base-url = "{gw.base}"', f"seed = {SEED}", "",
             "[generation]", f"max-examples = {EXAMPLES}", "",
             "# a body over GATEWAY_MAX_BODY_BYTES is refused 413 (documented on every body)",
             "[checks.negative_data_rejection]",
             f"expected-statuses = {json.dumps(REJECTED)}", "", "[auth.openapi]"]
    lines += [f"{name} = {json.dumps(value).replace(':', ' =')}"
              for name, value in auth.items()]
    for ids, status, why in SEMANTIC_REFUSALS:
        lines += ["", f"# {why}", "[[operations]]",
                  f"include-operation-id = {json.dumps(list(ids))}",
                  "[operations.checks.positive_data_acceptance]",
                  f"expected-statuses = {json.dumps([*ACCEPTED, status])}"]
    for op_id, why in NOT_YET_SERVED:
        lines += ["", f"# {why}", "[[operations]]", f'include-operation-id = "{op_id}"',
                  "enabled = false"]
    config.write_text("\n".join(lines) + "\n")
    proc = await asyncio.create_subprocess_exec(
        str(ST), "--config-file", str(config), "run", str(SPEC_PATH), "--workers", "1",
        "--no-color", "--report-dir", str(tmp_path / "reports"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,   # its cache (.schemathesis/) stays out of the work tree
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=540)
    text = out.decode("utf-8", "replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    if os.environ.get("GATEWAY_TEST_SCHEMATHESIS_OUT"):   # a developer's copy of the report
        Path(os.environ["GATEWAY_TEST_SCHEMATHESIS_OUT"]).write_text(text)
    assert proc.returncode == 0, text[-20000:]
