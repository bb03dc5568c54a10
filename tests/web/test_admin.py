"""The operator API: admin token, client registration rules, disable."""

from __future__ import annotations

from tests.web.conftest import Gateway


def _admin(gw: Gateway) -> dict[str, str]:
    token = (gw.settings.keys_dir / "sandbox" / "admin-token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def test_admin_needs_the_token(gw: Gateway) -> None:
    r = await gw.client.get("/admin/v1/clients")
    assert r.status == 401 and (await r.json())["code"] == "unauthorized"
    r = await gw.client.get("/admin/v1/clients", headers={"Authorization": "Bearer nope"})
    assert r.status == 403
    gate = await gw.client_token("gate-metro-l1-xiaoshizi")
    r = await gw.client.get("/admin/v1/clients", headers={"Authorization": f"Bearer {gate}"})
    assert r.status == 403


async def test_register_use_and_disable_a_gate(gw: Gateway) -> None:
    import base64

    spec = {"client_id": "gate-new-1", "kind": "gate", "display_name": "New gate",
            "scene": "library", "operator": "Lib", "venue": "v-library-cqlib"}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
    assert r.status == 201, await r.text()
    body = await r.json()
    secret = body["client_secret"]
    assert "secret_hash" not in body and r.headers["Cache-Control"] == "no-store"
    basic = "Basic " + base64.b64encode(f"gate-new-1:{secret}".encode()).decode()
    form = {"grant_type": "client_credentials"}
    r = await gw.client.post("/oauth2/token", data=form, headers={"Authorization": basic})
    assert r.status == 200
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
    assert r.status == 409 and (await r.json())["code"] == "conflict"
    r = await gw.client.post("/admin/v1/clients/gate-new-1/disable", headers=_admin(gw))
    assert r.status == 200 and (await r.json())["disabled"] is True
    r = await gw.client.post("/oauth2/token", data=form, headers={"Authorization": basic})
    assert r.status == 401
    listed = await (await gw.client.get("/admin/v1/clients?kind=gate",
                                        headers=_admin(gw))).json()
    assert "gate-new-1" in {c["client_id"] for c in listed["clients"]}
    assert all("secret_hash" not in c for c in listed["clients"])


async def test_registration_rules(gw: Gateway) -> None:
    bad = [
        {"client_id": "x", "kind": "rp", "display_name": "n"},
        {"client_id": "rp-ok", "kind": "root", "display_name": "n"},
        {"client_id": "rp-ok", "kind": "rp", "display_name": "n",
         "redirect_uris": ["http://evil.example/cb"]},
        {"client_id": "rp-ok", "kind": "rp", "display_name": "n",
         "redirect_uris": ["https://rp.example/cb#frag"]},
        {"client_id": "rp-ok", "kind": "rp", "display_name": "n",
         "auth_method": "private_key_jwt"},
        {"client_id": "gate-x", "kind": "gate", "display_name": "n"},
    ]
    for spec in bad:
        r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
        assert r.status == 400, spec
        assert (await r.json())["code"] == "invalid_request"
    r = await gw.client.post("/admin/v1/clients", data="not json",
                             headers={**_admin(gw), "Content-Type": "text/plain"})
    assert r.status == 415 and (await r.json())["code"] == "unsupported_media_type"
