"""An independent certified client: openid-client (npm; panva's OpenID Certified RP library)
runs PAR + DPoP code flow with PKCE against the live gateway, validates the ID token, reads
userinfo with DPoP and refreshes with DPoP. Node 20 runs tests/oidc/node/interop.mjs; its
dependencies come from package-lock.json (`npm ci`, run by script/test)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page

NODE_DIR = Path(__file__).resolve().parent / "node"
LOGGED_OUT = "http://127.0.0.1:8400/logged-out"


async def _run(op: OP, alg: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node, "node 20 is needed (script/test installs it)"
    assert (NODE_DIR / "node_modules" / "openid-client").is_dir(), \
        "run `npm ci` in tests/oidc/node (script/test does)"
    env = {**os.environ, "ISSUER": op.base, "CLIENT_ID": JKB, "REDIRECT_URI": JKB_CB,
           "CLIENT_SECRET": op.gw.demo_secret(JKB)["client_secret"], "DPOP_ALG": alg,
           "POST_LOGOUT_URI": LOGGED_OUT}
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "interop.mjs"), cwd=NODE_DIR, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise AssertionError((await proc.stderr.read()).decode())
        authorize = urlsplit(json.loads(line)["authorize"])
        assert authorize.path == "/oauth2/authorize"
        r = await op.c.get(f"{authorize.path}?{authorize.query}")
        assert r.status == 200, await r.text()
        page = parse_page(await r.text())
        token = await op.resident()
        assert (await op.scan(token, page.qr))[0] == 200
        assert (await op.approve(token, page.session_id, page.number))[0] == 200
        redirect_to = (await op.poll(page.session_id))["redirect_to"]
        proc.stdin.write(redirect_to.encode() + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        err = await asyncio.wait_for(proc.stderr.read(), 10)
        assert line, err.decode()
        return dict(json.loads(line))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_openid_client_par_dpop_pkce_userinfo_refresh(op: OP, alg: str) -> None:
    out = await _run(op, alg)
    assert out["token_type"] == "dpop" and out["refreshed_token_type"] == "dpop"
    assert out["aud"] == JKB and out["nonce"]
    userinfo = out["userinfo"]
    assert isinstance(userinfo, dict) and userinfo["sub"] == out["sub"] and "name" in userinfo
    assert out["again"] == userinfo and out["refreshed_differs"] is True
    claims = jwt.decode(str(out["access_token"]), options={"verify_signature": False})
    assert claims["cnf"]["jkt"]   # the access token openid-client holds is DPoP-bound


async def test_openid_client_rp_initiated_logout(op: OP) -> None:
    """The end-session URL openid-client builds (id_token_hint, post_logout_redirect_uri,
    state) ends the grant: the browser is sent back with the state, the refresh token and
    the access token stop working."""
    out = await _run(op, "ES256")
    end = urlsplit(str(out["end_session"]))
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{op.base}/oauth2/logout"
    r = await op.c.get(f"{end.path}?{end.query}", allow_redirects=False)
    assert r.status == 302, await r.text()
    back = urlsplit(r.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == LOGGED_OUT
    assert parse_qs(back.query)["state"] == [out["state"]]
    r = await op.c.post("/oauth2/introspect", data={"token": str(out["refresh_token"])},
                        headers={"Authorization": op.gw.basic(JKB)})
    assert (await r.json()) == {"active": False}
