"""Record ids are UUIDv7 (RFC 9562 §5.7): the scan's Unix milliseconds in the first 48 bits,
version 7, the RFC variant, 74 random bits — time-ordered, telling nothing else."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from gateway.services.records import new_record_id


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_a_record_id_is_a_uuidv7_of_its_millisecond(ms: int) -> None:
    rid = new_record_id(ms / 1000 + 0.0004)
    u = uuid.UUID(rid)
    assert str(u) == rid
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert u.int >> 80 == ms


def test_record_ids_are_unique_and_ordered_by_time() -> None:
    ids = [new_record_id(1_800_000_000 + i / 1000) for i in range(5000)]
    assert len(set(ids)) == 5000
    assert ids == sorted(ids)
    randoms = {uuid.UUID(i).int & ((1 << 62) - 1) for i in ids}
    assert len(randoms) == 5000
