"""GET /v1/revocations/cards: gate token only, signed by the trust-list key, hashed entries,
deltas with ?since=, ETag/304, and report-loss / replacement / suspension on it at once."""

from __future__ import annotations

import json
from typing import Any

from gateway.codec.jws import verify_compact
from gateway.codec.offline import DENY_LIST_TYP, CardHash
from gateway.services.identity import registry_entries
from gateway.web.codes import CODES
from gateway.web.identity import IDENTITY
from tests.identity.conftest import Api, bearer

METRO_GATE = "gate-metro-l1-xiaoshizi"


async def _get(api: Api, token: str, since: int | None = None,
               etag: str | None = None) -> Any:
    headers = bearer(token)
    if etag:
        headers["If-None-Match"] = etag
    url = "/v1/revocations/cards" + (f"?since={since}" if since is not None else "")
    return await api.c.get(url, headers=headers)


def _verified(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    anchor = api.gw.app[CODES].trust.signing_key()
    _, payload = verify_compact(body["jws"], lambda kid: anchor if kid == anchor.kid else None,
                                DENY_LIST_TYP)
    doc: dict[str, Any] = json.loads(payload)
    assert doc == body["deny_list"]
    return doc


async def test_only_gates_read_it(api: Api) -> None:
    assert (await api.c.get("/v1/revocations/cards")).status == 401
    resident = await api.resident_token("r-wang-lei", "ykb")
    assert (await _get(api, resident)).status == 403
    gate = await api.gw.client_token(METRO_GATE)
    r = await _get(api, gate)
    assert r.status == 200 and r.headers["Cache-Control"].startswith("private")
    for bad in ("-1", "x", "1e3", "9" * 20, str(2**63)):
        r = await api.c.get(f"/v1/revocations/cards?since={bad}", headers=bearer(gate))
        assert r.status == 400 and (await r.json())["code"] == "invalid_request"


async def test_hashed_signed_and_report_loss_at_once(api: Api) -> None:
    gate = await api.gw.client_token(METRO_GATE)
    r = await _get(api, gate)
    body = await r.json()
    doc = _verified(api, body)
    assert doc["list"] == "cards" and doc["full"] is True
    assert doc["expires_at"] > doc["next_update"] > doc["issued_at"]
    hasher = CardHash.from_json(doc["hash"])
    raw = await r.read()
    # the demo data's lost and replaced cards are on it, as hashes only
    for card in ("CQ100000249", "CQ100000017"):
        assert hasher.of("CQ", card) in doc["entries"]
        assert card.encode() not in raw
    assert hasher.of("CQ", "CQ100000579") not in doc["entries"]
    # ETag / 304
    etag = r.headers["ETag"]
    r304 = await _get(api, gate, etag=etag)
    assert r304.status == 304 and r304.headers["ETag"] == etag
    # report-loss: on the list in the same call
    token = await api.resident_token("r-wang-lei", "ykb")
    me = await (await api.c.get("/v1/me", headers=bearer(token))).json()
    card = next(c for c in me["credentials"] if c["kind"] == "ssc_card")
    assert (await api.c.post(f"/v1/me/cards/{card['id']}/report-loss",
                             headers=bearer(token))).status == 200
    r2 = await _get(api, gate, since=doc["version"], etag=etag)
    assert r2.status == 200
    delta = _verified(api, await r2.json())
    assert delta["full"] is False and delta["since"] == doc["version"]
    assert delta["version"] > doc["version"]
    assert delta["added"] == [hasher.of("CQ", "CQ100000579")] and delta["removed"] == []
    # a replacement: the new card is not on it, the old one stays
    service = api.gw.app[IDENTITY]
    await service.sync(registry_entries({"residents": [{
        "citizen_id": "500155200509189973", "display_name": "王磊",
        "ykm_account": "ykm-7f3a0003", "concession": "student",
        "cards": [{"card_no": "CQ100000579", "region": "CQ", "status": "replaced"},
                  {"card_no": "CQ100000587", "region": "CQ", "status": "active"}]}]}))
    full = _verified(api, await (await _get(api, gate)).json())
    assert hasher.of("CQ", "CQ100000579") in full["entries"]
    assert hasher.of("CQ", "CQ100000587") not in full["entries"]
    # a version from another store (or the future): the full list
    future = _verified(api, await (await _get(api, gate, since=full["version"] + 10)).json())
    assert future["full"] is True and future["entries"] == full["entries"]


async def test_suspension_puts_the_persons_cards_on_it(api: Api) -> None:
    gate = await api.gw.client_token(METRO_GATE)
    service = api.gw.app[IDENTITY]
    person = await service.find_by_credential("ssc_card", "CQ", "CQ100000579")
    assert person is not None
    hasher = CardHash.from_json(_verified(api, await (await _get(api, gate)).json())["hash"])
    entry = hasher.of("CQ", "CQ100000579")
    await service.suspend(person.person_id)
    assert entry in _verified(api, await (await _get(api, gate)).json())["entries"]
    await service.suspend(person.person_id, False)
    assert entry not in _verified(api, await (await _get(api, gate)).json())["entries"]
