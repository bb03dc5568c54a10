"""The gate SDK's offline verification rate on one core (issue 14: ≥ 10,000 codes/s).

    .venv/bin/python -m loadtests.gate_sdk [--codes 20000] [--rounds 3] [--cpu 0]

No server: a trust list is signed locally by a fresh trust-list key (the gateway's own
TrustList service), a gate is provisioned with it in a temporary directory, fresh 渝快码
codes (each its own nonce) are made with the code key, and ``Gate.verify_code`` judges them
all — codec verify, scene policy, replay cache, journal record — pinned to one CPU. Two rows:

* ``memory``: journal and replay cache written without fsync (the CPU cost; the target row);
* ``no journal``: the same without the journal's write (the replay cache still written): the
  journal's own cost, by difference;
* ``fsync``: every scan fsync'd twice (replay entry, journal record) as on a gate; bound by
  this machine's disk, printed for information.

The target (≥ 10,000 codes/s on one core) is the ``memory`` row per CPU-second: the work a
gate's core does per scan, journal written. With fsync per scan, as docs/offline.md §4 and §7
require before the gate opens, the rate is the disk's (two flushes per scan), not the CPU's.

Figures are medians of ``--rounds`` runs on fresh codes; other processes share the CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_CODES_PER_S = 10_000
SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
if str(SDK_DIR) not in sys.path:  # the SDK is its own distribution (sdk/pyproject.toml)
    sys.path.insert(0, str(SDK_DIR))


def _setup(work: Path, now: float) -> tuple[Any, Any]:
    from gateway.authz.keyring import bootstrap
    from gateway.services.scenes import SceneCatalogue
    from gateway.services.trustlist import TrustList, trust_anchor_jwk
    from gateway_gate.gate import Gate, _write_atomic

    code_ring = bootstrap("code", "EdDSA", now - 60)
    trust_ring = bootstrap("trust", "EdDSA", now - 60)
    snap = TrustList(lambda: code_ring, lambda: trust_ring, lambda: now,
                     scenes=SceneCatalogue.load).snapshot()
    Gate.provision(work, base_url="http://127.0.0.1:9", client_id="bench-gate",
                   client_secret="-", scene="metro", anchor_jwk=trust_anchor_jwk(trust_ring))
    _write_atomic(work / "trust-list.json", snap.body)
    return code_ring, Gate


def _codes(code_ring: Any, n: int, now: float) -> list[str]:
    from gateway.codec import Ed25519Signer, encode_ykm

    signer = Ed25519Signer(code_ring.current().private_key)
    return [encode_ykm(holder=os.urandom(16), issued_at=int(now), lifetime_s=60, signer=signer,
                       nonce=os.urandom(12)) for _ in range(n)]


def bare_codec(n: int = 20_000) -> tuple[float, float]:
    """The codec's own verify_code over the same kind of codes (the floor of the SDK's cost)."""
    from gateway.codec import verify_code

    with tempfile.TemporaryDirectory() as d:
        now = time.time()
        code_ring, gate_cls = _setup(Path(d) / "gate", now)
        codes = _codes(code_ring, n, now)
        gate = gate_cls(Path(d) / "gate", durable=False)
        lookup = gate.trust.lookup
        t0, c0 = time.perf_counter(), time.process_time()
        for c in codes:
            verify_code(c, lookup, now)
        rate = n / (time.perf_counter() - t0)
        cpu_rate = n / max(1e-9, time.process_time() - c0)
        gate.close()
    return rate, cpu_rate


class _NoJournal:
    """A journal that writes nothing: the journal's own cost, measured by its absence."""

    def append_line(self, line: bytes) -> int:
        return 0


def measure(n: int = 20_000, rounds: int = 3, durable: bool = False,
            journal: bool = True) -> dict[str, Any]:
    rates: list[float] = []
    cpu_rates: list[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            work = Path(d) / "gate"
            now = time.time()
            code_ring, gate_cls = _setup(work, now)
            codes = _codes(code_ring, n, now)
            gate = gate_cls(work, durable=durable)
            if not journal:
                gate.journal.close()
                gate.journal = _NoJournal()
                gate.journal.close = lambda: None
            t0, c0 = time.perf_counter(), time.process_time()
            allowed = sum(gate.verify_code(c, now=now).decision == "allow" for c in codes)
            elapsed = time.perf_counter() - t0
            cpu_rates.append(n / max(1e-9, time.process_time() - c0))
            gate.close()
            if allowed != n:
                raise RuntimeError(f"only {allowed} of {n} fresh codes were allowed")
            rates.append(n / elapsed)
    return {"codes": n, "rounds": rounds, "durable": durable, "journal": journal,
            "rates": [round(r) for r in rates],
            "median_codes_per_s": round(statistics.median(rates)),
            "us_per_code": round(1e6 / statistics.median(rates), 1),
            # per second of this process's own CPU time: what one core does when it is not
            # shared (the box's other processes stretch wall time, not this)
            "median_codes_per_cpu_s": round(statistics.median(cpu_rates))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="loadtests.gate_sdk", description=__doc__.split("\n\n")[0])
    p.add_argument("--codes", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fsync-codes", type=int, default=500,
                   help="codes for the fsync row (disk-bound; 0 skips it)")
    p.add_argument("--json", action="store_true", help="one JSON line (script/bench reads it)")
    p.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first "
                                                         "one allowed)")
    args = p.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {args.cpu if args.cpu is not None else allowed[0]})
    load0 = os.getloadavg()[0]
    mem = measure(args.codes, args.rounds)
    bare, bare_cpu = bare_codec(args.codes)
    nojournal = measure(args.codes, args.rounds, journal=False)
    dur = measure(args.fsync_codes, 1, durable=True) if args.fsync_codes else None
    if args.json:
        import json

        print(json.dumps({**mem, "bare_codec_codes_per_s": round(bare),
                          "bare_codec_codes_per_cpu_s": round(bare_cpu),
                          "no_journal_codes_per_cpu_s": nojournal["median_codes_per_cpu_s"],
                          "no_journal_codes_per_s": nojournal["median_codes_per_s"],
                          "fsync_codes_per_s": dur["median_codes_per_s"] if dur else None,
                          "fsync_codes_per_cpu_s": dur["median_codes_per_cpu_s"]
                          if dur else None,
                          "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)]}))
        return 0
    print(f"gate SDK offline verify (one core, journal + replay cache, no fsync): "
          f"{mem['median_codes_per_s']} codes/s wall, {mem['median_codes_per_cpu_s']} codes per "
          f"CPU-second (median of {mem['rounds']} x {mem['codes']}: {mem['rates']})")
    print(f"  the codec's verify_code alone, same core, same run: {bare:.0f} codes/s wall, "
          f"{bare_cpu:.0f} per CPU-second (SDK / codec = "
          f"{mem['median_codes_per_cpu_s'] / bare_cpu:.2f} in CPU time)")
    verdict = "PASS" if mem["median_codes_per_cpu_s"] >= TARGET_CODES_PER_S else "MISS"
    print(f"  {verdict}  SDK offline verification codes per CPU-second on one core: "
          f"{mem['median_codes_per_cpu_s']} (goal >= {TARGET_CODES_PER_S}; wall "
          f"{mem['median_codes_per_s']}/s on this shared box, load {os.getloadavg()[0]:.1f})")
    print(f"  without the journal (replay cache still written), same run: "
          f"{nojournal['median_codes_per_cpu_s']} per CPU-second, "
          f"{nojournal['median_codes_per_s']}/s wall: the journal costs "
          f"{1e6 / mem['median_codes_per_cpu_s'] - 1e6 / nojournal['median_codes_per_cpu_s']:.1f}"
          f" µs of CPU per scan")
    if dur is not None:
        print(f"info: with both fsyncs per scan (this machine's disk): "
              f"{dur['median_codes_per_s']} codes/s wall, {dur['us_per_code']} µs/code, "
              f"{dur['median_codes_per_cpu_s']} per CPU-second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
