"""Helpers for the code tests: the real app (tests/web/conftest.py `make_gateway`) on real
Redis, resident tokens, gate tokens, PNG read-back with zxing-cpp."""

from __future__ import annotations

import secrets
from typing import Any

from gateway.app import ACCESS_TOKENS, CORE
from loadtests.flows import read_qr_png as read_png  # noqa: F401 - used by the tests
from tests.web.conftest import Gateway, gw, make_gateway  # noqa: F401 - fixtures

METRO_GATE = "gate-metro-l1-xiaoshizi"
METRO_GATE_2 = "gate-metro-l2-jwt"
BUS_GATE = "gate-bus-route-111"
SCENIC_GATE = "gate-scenic-hongyadong"
LIBRARY_GATE = "gate-library-cqlib"
PHARMACY_GATE = "gate-pharmacy-tongjunge"
DOOR_GATE = "gate-community-door"


def new_person_id() -> str:
    return secrets.token_hex(16)


def resident_token(g: Gateway, person_id: str, client_id: str = "app-ykb",
                   scopes: tuple[str, ...] = ("codes:issue", "me")) -> str:
    """A resident token as the token-exchange grant issues it (sealed person id)."""
    sealed = g.app[CORE].data_keys.seal_person_id(person_id, client_id)
    sub = g.app[CORE].data_keys.pairwise_subject("cq-resident-apps", person_id)
    token, _ = g.app[ACCESS_TOKENS].issue(client_id=client_id, kind="resident", sub=sub,
                                           scopes=scopes, ttl_s=600, sealed_person=sealed)
    return token


async def issue(g: Gateway, token: str, body: dict[str, Any] | None = None,
                accept: str = "application/json") -> Any:
    r = await g.client.post("/v1/codes", json=body if body is not None else {},
                             headers={"Authorization": f"Bearer {token}", "Accept": accept})
    assert r.status == 201, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    return r


async def verify(g: Gateway, gate_token: str, code: Any, scene: str,
                 request_id: str | None = None, **extra: Any) -> tuple[int, Any]:
    body: dict[str, Any] = {"code": code, "scene": scene,
                            "request_id": request_id or secrets.token_hex(8), **extra}
    r = await g.client.post("/v1/codes/verify", json=body,
                             headers={"Authorization": f"Bearer {gate_token}"})
    return r.status, await r.json()




async def extra_gate(g: Gateway, client_id: str, scene: str, sector: str) -> str:
    """Register one more gate (client_secret_basic) and return its access token."""
    import base64

    from gateway.authz.clients import Client, hash_secret

    secret = secrets.token_urlsafe(32)
    await g.app[CORE].clients.put(Client(
        client_id=client_id, kind="gate", display_name=client_id, secret_hash=hash_secret(secret),
        scopes=("codes:verify",), sector=sector, scene=scene))
    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    r = await g.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": basic})
    assert r.status == 200, await r.text()
    return str((await r.json())["access_token"])


async def demo_person(g: Gateway, resident: str = "r-zhang-wei") -> str:
    """The person id the sandbox seeded for a demo resident (gateway/data/residents.json)."""
    from gateway.services.upstream import load_residents
    from gateway.web.identity import IDENTITY

    r = next(x for x in load_residents() if x.id == resident)
    person = await g.app[IDENTITY].find_by_citizen_id(r.citizen_id)
    assert person is not None
    return person.person_id
