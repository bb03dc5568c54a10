"""Contract: single-use claims (nonces, jti, one-time codes) on every store."""

from __future__ import annotations

import asyncio

from tests.contract.conftest import Backend


async def test_first_claim_wins_and_second_sees_first_value(backend: Backend) -> None:
    once = backend.single_use()
    assert await once.claim("n1", 5, "gate-a|r1") is None
    assert await once.claim("n1", 5, "gate-b|r2") == "gate-a|r1"
    assert await once.peek("n1") == "gate-a|r1"


async def test_a_single_use_item_cannot_be_used_twice_under_concurrency(backend: Backend) -> None:
    once = backend.single_use()
    results = await asyncio.gather(*(once.claim("hot", 5, f"v{i}") for i in range(300)))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1
    assert all(r == f"v{winners[0]}" for r in results if r is not None)


async def test_keys_are_independent(backend: Backend) -> None:
    once = backend.single_use()
    assert await once.claim("a", 5) is None
    assert await once.claim("b", 5) is None
    assert await once.peek("c") is None


async def test_claim_expires_with_its_ttl(backend: Backend) -> None:
    once = backend.single_use()
    assert await once.claim("short", 0.15, "x") is None
    await backend.elapse(0.3)
    assert await once.peek("short") is None
    assert await once.claim("short", 5, "y") is None
