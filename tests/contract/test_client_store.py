"""Contract: the client registry on every store."""

from __future__ import annotations

import pytest

from gateway.authz.clients import Client, hash_secret
from tests.contract.conftest import Backend


def _gate(cid: str = "gate-1") -> Client:
    return Client(client_id=cid, kind="gate", display_name="Metro L1 gate 3",
                  secret_hash=hash_secret("s3cret"), scopes=("codes:verify",),
                  scene="metro", operator="Chongqing Rail Transit")


async def test_put_get_round_trip(backend: Backend) -> None:
    store = backend.clients()
    c = _gate()
    await store.put(c)
    got = await store.get("gate-1")
    assert got == c
    assert got is not None and got.check_secret("s3cret") and not got.check_secret("s3cret!")
    assert await store.get("nope") is None


async def test_list_is_sorted_and_put_replaces(backend: Backend) -> None:
    store = backend.clients()
    await store.put(_gate("b"))
    await store.put(_gate("a"))
    await store.put(_gate("a").__class__(**{**_gate("a").__dict__, "disabled": True}))
    listed = await store.list()
    assert [c.client_id for c in listed] == ["a", "b"]
    assert listed[0].disabled is True


def test_gate_needs_scene() -> None:
    with pytest.raises(ValueError):
        Client(client_id="g", kind="gate", display_name="g")


async def test_version_changes_on_every_put(backend: Backend) -> None:
    """ClientStore.version: what client caches watch (gateway/authz/client_auth.py)."""
    store = backend.clients()
    assert await store.version() is None
    seen = set()
    for c in (_gate("a"), _gate("b"), _gate("a")):
        await store.put(c)
        v = await store.version()
        assert v is not None and v not in seen
        seen.add(v)
    assert await store.version() == await store.version()  # a read does not move it
