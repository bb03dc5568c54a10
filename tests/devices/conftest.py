"""Device tests: the real app (tests/web/conftest.py) on real Redis, the reference phone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loadtests.phone import Phone
from tests.codes.conftest import (  # noqa: F401 - fixtures and helpers for the tests
    METRO_GATE,
    SCENIC_GATE,
    Gateway,
    demo_person,
    gw,
    make_gateway,
    resident_token,
    verify,
)


async def enrolled(g: Gateway, person_id: str | None = None, alg: str = "EdDSA",
                   token: str | None = None,
                   clock: Callable[[], float] = time.time) -> tuple[Phone, dict[str, Any], str]:
    """A reference phone enrolled for a person (the demo resident by default)."""
    pid = person_id or await demo_person(g)
    tok = token or resident_token(g, pid)
    phone = Phone.new(alg, clock=clock)
    answer = await phone.enrol(g.client, tok)
    return phone, answer, tok
