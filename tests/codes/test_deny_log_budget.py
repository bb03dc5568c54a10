"""Deny lines are sampled per reason (gateway.services.codes.LineBudget): a flood is counted
by the metrics, the log keeps at most N lines per reason per second and says what it left out."""

from __future__ import annotations

from gateway.services.gate import LineBudget


def test_at_most_n_lines_per_reason_per_second_and_the_next_line_counts_the_rest() -> None:
    b = LineBudget(per_second=3)
    got = [b.take("malformed", 100.1) for _ in range(10)]
    assert got == [0, 0, 0] + [None] * 7
    assert b.take("replayed", 100.2) == 0            # other reasons have their own budget
    assert b.take("malformed", 100.99) is None       # same second: still over
    assert b.take("malformed", 101.0) == 8           # next second: 7 + 1 left out
    assert b.take("malformed", 101.1) == 0


def test_a_quiet_reason_is_never_suppressed() -> None:
    b = LineBudget(per_second=2)
    assert [b.take("expired", 10.0 + i) for i in range(50)] == [0] * 50
