"""Issue 16: each finding of the security review, with a test that failed before its fix."""

from __future__ import annotations

import pytest

from tests.oidc.conftest import OP
from tests.web.conftest import GatewayFactory


# -- finding 1: number matching is on by default ------------------------------------------------
async def test_number_matching_is_required_by_default(op: OP) -> None:
    """A victim who scans an attacker's QR and approves with no body must not log the
    attacker's browser in: the approval has to name the number that browser shows."""
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    status, scanned = await op.scan(token, page.qr)
    assert status == 200 and page.number in scanned["number_choices"]
    r = await op.c.post(f"/v1/login-sessions/{page.session_id}/approve",
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status == 400 and (await r.json())["code"] == "invalid_request"
    assert (await op.poll(page.session_id))["status"] == "scanned"
    assert (await op.approve(token, page.session_id, page.number))[0] == 200


async def test_without_number_matching_no_choices_are_offered(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turned off, the scan answer lists no choices (a guess among them would win 1 in 3)."""
    monkeypatch.setenv("GATEWAY_RATELIMIT_LOGIN_IP", "1000/1/1000")
    op = OP(await make_gateway(login_require_number=False))
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    status, scanned = await op.scan(token, page.qr)
    assert status == 200 and "number_choices" not in scanned
    r = await op.c.post(f"/v1/login-sessions/{page.session_id}/approve",
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, await r.text()
