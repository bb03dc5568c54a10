"""A gate that re-sends a card tap under the same request id - even with another scan time,
so another PSAM MAC - gets the first answer, never a second allow (found under load: the
claim was sharded by the MAC, so a retry whose scan time differed landed on another shard
and was claimed afresh)."""

from __future__ import annotations

from tests.identity.conftest import Api, now_rfc3339

METRO_GATE = "gate-metro-l1-xiaoshizi"


async def test_a_retried_tap_with_another_scan_time_gets_the_first_answer(api: Api) -> None:
    token = await api.gw.client_token(METRO_GATE)
    first = await api.tap("CQ100000025", METRO_GATE, "metro", request_id="retry-1",
                          scanned_at=now_rfc3339(-2), token=token)
    assert (first["decision"], first["reason"]) == ("allow", "ok")
    for offset in (-1.0, 0.0):
        again = await api.tap("CQ100000025", METRO_GATE, "metro", request_id="retry-1",
                              scanned_at=now_rfc3339(offset), token=token)
        assert again == first
