"""GCRA, the generic cell rate algorithm, as pure maths.

The algorithm is the ATM Forum's "virtual scheduling" form of the GCRA (ATM Forum Traffic
Management Specification 4.0, §4.4.2; ITU-T I.371), as retold for HTTP rate limiting in
Brandur Leach, "Rate limiting, Cells and GCRA" (brandur.org/rate-limiting, 2015) and
implemented by redis-cell.

For each limited subject we keep ONE number, the theoretical arrival time (TAT): the instant
at which the subject's bucket would be empty again if nothing else arrived. With the emission
interval T = period_s / rate and a burst of b cells:

    tat'     = max(tat, now) + cost·T          (the TAT if we admit this request)
    allow_at = tat' − b·T                      (earliest instant this request conforms)
    admit  ⇔ now ≥ allow_at

so a fresh subject may send exactly `b` cells at once and then one every T, and over any
window of length w it is admitted at most b + ⌊w / T⌋ cells.

All arithmetic is done on integer microseconds (`gcra_us`): the float form would let
`now + 0.1 + 0.1 + 0.1 − 0.3 ≠ now` deny the last cell of a burst. The Redis script
(gcra.lua) is a line-for-line port of `gcra_us`, and T is rounded UP to a whole microsecond,
so rounding can only make the limit stricter, never looser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

US_PER_S = 1_000_000


@dataclass(frozen=True)
class Limit:
    """`rate` cells per `period_s` seconds sustained; up to `burst` cells at once."""

    rate: int
    period_s: float
    burst: int

    def __post_init__(self) -> None:
        if isinstance(self.rate, bool) or not isinstance(self.rate, int) or self.rate < 1:
            raise ValueError("Limit.rate must be an integer >= 1")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("Limit.burst must be an integer >= 1")
        if not (isinstance(self.period_s, int | float) and math.isfinite(self.period_s)
                and self.period_s > 0):
            raise ValueError("Limit.period_s must be a finite number of seconds > 0")

    @property
    def emission_interval_s(self) -> float:
        """T = period_s / rate: the sustained spacing between two cells."""
        return self.period_s / self.rate

    @cached_property
    def emission_interval_us(self) -> int:
        """T in whole microseconds, rounded up (never looser than the configured limit).

        Computed on the decimal the operator wrote (`Fraction(repr(period_s))`), so that
        e.g. 0.1 s / 1 is exactly 100 000 µs and not 100 000.000 000 000 01 → 100 001.
        """
        exact = Fraction(repr(float(self.period_s))) * US_PER_S / self.rate
        return max(1, math.ceil(exact))

    @cached_property
    def window_s(self) -> float:
        """b·T: the time to earn back a full burst (the `w` of the RateLimit-Policy field)."""
        return self.burst * self.emission_interval_us / US_PER_S


@dataclass(frozen=True)
class Decision:
    """The outcome of one `hit`.

    `limit` is the burst (the most cells that may go at once); `remaining` is how many cost-1
    cells would conform right now after this decision; `retry_after_s` is 0 when allowed, else
    the wait until this same request would conform; `reset_after_s` is the wait until the
    subject has its full burst again. `window_s` is b·T (None when unknown).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    reset_after_s: float
    window_s: float | None = None


@dataclass(frozen=True)
class DecisionUs:
    """`gcra_us`'s result in integer microseconds; `new_tat_us` is None when unchanged."""

    allowed: bool
    remaining: int
    retry_after_us: int
    reset_after_us: int
    new_tat_us: int | None


def check_cost(cost: int, burst: int) -> None:
    """A cost above the burst could never conform: that is a caller bug, not a denial."""
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ValueError("cost must be an integer >= 0")
    if cost > burst:
        raise ValueError("cost exceeds the burst: such a request could never be allowed")


def gcra_us(tat_us: int | None, now_us: int, interval_us: int, burst: int,
            cost: int = 1) -> DecisionUs:
    """The GCRA step on integer microseconds (the exact form that gcra.lua mirrors).

    `cost == 0` is a peek: it reports the state and never changes it.
    """
    check_cost(cost, burst)
    if interval_us < 1:
        raise ValueError("interval_us must be >= 1")
    tat = now_us if tat_us is None or tat_us < now_us else tat_us
    burst_us = burst * interval_us
    new_tat = tat + cost * interval_us
    allow_at = new_tat - burst_us
    diff = now_us - allow_at
    if diff < 0:
        remaining = (now_us - (tat - burst_us)) // interval_us
        return DecisionUs(
            allowed=False,
            remaining=max(0, min(burst, remaining)),
            retry_after_us=-diff,
            reset_after_us=tat - now_us,
            new_tat_us=None,
        )
    return DecisionUs(
        allowed=True,
        remaining=min(burst, diff // interval_us),
        retry_after_us=0,
        reset_after_us=new_tat - now_us,
        new_tat_us=new_tat if cost > 0 else None,
    )


def to_us(seconds: float) -> int:
    """Seconds since the epoch → integer microseconds (nearest)."""
    return round(seconds * US_PER_S)


def redis_key(prefix: str, key: str) -> str:
    """The Redis key of a subject: `<prefix>{gate:abc}` for `gate:abc` (one hash tag: one
    Cluster slot per subject)."""
    if "{" in key or "}" in key:
        raise ValueError("rate-limit subject keys must not contain braces")
    return f"{prefix}{{{key}}}"


def decision_from_reply(reply: Any, limit: Limit) -> Decision:
    """The GCRA script's reply `[allowed, remaining, retry_after_us, reset_after_us]`."""
    allowed, remaining, retry_us, reset_us = reply
    return decision_from_us(
        DecisionUs(allowed=bool(allowed), remaining=int(remaining),
                   retry_after_us=int(retry_us), reset_after_us=int(reset_us),
                   new_tat_us=None),
        limit)


def decision_from_us(d: DecisionUs, limit: Limit) -> Decision:
    return Decision(
        allowed=d.allowed,
        limit=limit.burst,
        remaining=d.remaining,
        retry_after_s=d.retry_after_us / US_PER_S,
        reset_after_s=d.reset_after_us / US_PER_S,
        window_s=limit.window_s,
    )


def gcra(tat: float | None, now: float, limit: Limit,
         cost: int = 1) -> tuple[Decision, float | None]:
    """One GCRA step (ATM Forum TM 4.0 §4.4.2; Brandur, "Rate limiting, Cells and GCRA").

    `tat` is the subject's stored theoretical arrival time (None for a subject never seen or
    expired), `now` the current time, both in seconds since the epoch. Returns the decision
    and the TAT to store, or None when the state must not change (denied, or a cost-0 peek).
    """
    d = gcra_us(None if tat is None else to_us(tat), to_us(now), limit.emission_interval_us,
                limit.burst, cost)
    new_tat = None if d.new_tat_us is None else d.new_tat_us / US_PER_S
    return decision_from_us(d, limit), new_tat
