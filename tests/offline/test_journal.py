"""The scan journal and the replay cache's file: appends are durable and a crash (a torn or
garbled tail) loses at most the record being written, never an earlier one."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_gate import GateError, Journal, ReplayCache


def _fill(path: Path, n: int) -> list[int]:
    j = Journal(path)
    ends = [j.append({"i": i, "code": f"YK1:{i:04d}", "scanned_at": "t"}) for i in range(n)]
    j.close()
    return ends


def test_append_read_resume(tmp_path: Path) -> None:
    p = tmp_path / "journal.log"
    ends = _fill(p, 5)
    j = Journal(p)
    assert [r["i"] for _, r in j.records()] == [0, 1, 2, 3, 4]
    assert [r["i"] for _, r in j.records(ends[2])] == [3, 4]  # resume after the 3rd
    assert j.damaged == 0 and j.cut_tail_bytes == 0
    assert oct(p.stat().st_mode & 0o777) == "0o600"


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=1, max_value=200), st.binary(max_size=40))
def test_a_torn_tail_loses_only_the_last_record(cut: int, garbage: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "journal.log"
        ends = _fill(p, 4)
        data = p.read_bytes()
        # the 4th record was being written: part of it reached the disk, then garbage
        torn = data[: ends[2]] + data[ends[2]: ends[3]][: max(0, ends[3] - ends[2] - cut)]
        p.write_bytes(torn + garbage.replace(b"\n", b""))
        j = Journal(p)
        got = [r["i"] for _, r in j.records()]
        assert got[:3] == [0, 1, 2] and got in ([0, 1, 2], [0, 1, 2, 3])
        # and the journal goes on from there: the next record is readable
        j.append({"i": 9})
        j.close()
        assert [r["i"] for _, r in Journal(p).records()][-1] == 9


def test_garbled_complete_lines(tmp_path: Path) -> None:
    p = tmp_path / "journal.log"
    ends = _fill(p, 5)
    data = bytearray(p.read_bytes())
    data[ends[1] + 12] ^= 0x20  # a flipped bit inside record 2: its checksum fails
    data[-5] ^= 0x01            # and inside the last record (a torn final write)
    p.write_bytes(bytes(data))
    j = Journal(p)
    assert [r["i"] for _, r in j.records()] == [0, 1, 3]  # 2 skipped, 4 cut off
    assert j.damaged == 1 and j.cut_tail_bytes == ends[4] - ends[3]


def test_replay_cache_survives_a_reboot_for_the_code_life(tmp_path: Path) -> None:
    p = tmp_path / "replay.log"
    c = ReplayCache(p, now=1000)
    c.add("ykm|k|n1", until=1065, now=1000)
    c.add("ykm|k|n2", until=1010, now=1000)
    c.close()
    after = ReplayCache(p, now=1020)  # rebooted 20 s later
    assert after.seen("ykm|k|n1", 1020) and not after.seen("ykm|k|n2", 1020)
    assert len(after) == 1
    after.close()
    assert not ReplayCache(p, now=1066).seen("ykm|k|n1", 1066)


def test_replay_cache_is_bounded_and_refuses_rather_than_forgets(tmp_path: Path) -> None:
    c = ReplayCache(None, now=0, max_entries=3)
    for i in range(3):
        c.add(f"k{i}", until=100, now=0)
    try:
        c.add("k3", until=100, now=1)
    except GateError as exc:
        assert exc.code == "replay_cache_full"
    else:
        raise AssertionError("a full cache must refuse")
    c.add("k3", until=200, now=101)  # the old entries have lapsed: room again
    assert len(c) == 1


def test_replay_file_is_compacted(tmp_path: Path) -> None:
    p = tmp_path / "replay.log"
    c = ReplayCache(p, now=0)
    for i in range(3000):
        c.add(f"k{i}", until=10 if i < 2990 else 1000, now=0)
    c.close()
    size = p.stat().st_size
    c2 = ReplayCache(p, now=20)
    assert len(c2) == 10 and p.stat().st_size < size / 50
    c2.close()
    assert os.path.exists(p)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


@settings(max_examples=200, deadline=None)
@given(code=_TEXT, rid=_TEXT, decision=st.sampled_from(["allow", "deny"]), reason=_TEXT,
       face=st.none() | _TEXT, at=_TEXT)
def test_the_scan_loops_lines_are_the_encoders_bytes(code: str, rid: str, decision: str,
                                                     reason: str, face: str | None,
                                                     at: str) -> None:
    """The verify loop formats its journal line itself (speed): byte for byte what
    encode_record makes of the same record, quotes, backslashes, controls and non-ASCII
    included, so a reader (and its checksum) cannot tell the two apart."""
    from gateway_gate.gate import ScanResult, _code_line
    from gateway_gate.journal import _decode_line, encode_record

    r = ScanResult(rid, decision, reason, face, at)
    expected = encode_record({"kind": "code", "code": code, **r.to_json()})
    assert _code_line(code, r) == expected
    assert _decode_line(expected) == {"kind": "code", "code": code, **r.to_json()}


@settings(max_examples=100, deadline=None)
@given(key=_TEXT, until=st.integers(min_value=0, max_value=2**40))
def test_replay_entries_are_the_encoders_bytes(key: str, until: int) -> None:
    import tempfile

    from gateway_gate.journal import encode_record

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "replay.log"
        cache = ReplayCache(p, 0.0, sync=False)
        cache.add(key, until, 0.0)
        cache.close()
        assert p.read_bytes() == encode_record({"k": key, "u": until})
