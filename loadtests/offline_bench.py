"""The gate SDK's offline verification rate on ONE core: `YK2:` codes made on a phone beside
`YK1:` codes issued by the gateway, in the same run (docs/devices.md "Speed").

A private redis-server and a real gateway (`python -m gateway serve`, sandbox) are started; a
reference phone (loadtests/phone.py) enrols; a gate (sdk/, gateway_gate) is provisioned with
the trust-list key and syncs; the gateway is stopped. Then, pinned to one CPU, the gate
verifies fresh codes offline — `YK1:` (pre-issued with the gateway's code key, as POST
/v1/codes makes them) and `YK2:` (the phone's), interleaved in rounds — each scan a full
`Gate.verify_code`: decode, signatures, windows, scene policy, device deny-list, replay
cache, journal. Twice: with the state durable (fsync per accepted scan, as a gate runs) and
without (the verification's own cost).

Both per second of wall time and per second of this process's CPU time (the box is shared:
wall time there measures waiting for the core as much as the work).

    python -m loadtests.offline_bench [--codes 2000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtests import seed
from loadtests.bench import (
    ROOT,
    free_port,
    gateway_env,
    prepare_keys,
    process,
    redis_server,
    wait_http,
)

GATE = "gate-metro-l1-xiaoshizi"


def _rate(gate: Any, codes: list[str]) -> tuple[float, float]:
    """(codes per second of wall time, codes per second of this process's CPU time)."""
    t, c0 = time.perf_counter(), time.process_time()
    for c in codes:
        r = gate.verify_code(c)
        if r.decision != "allow":
            raise SystemExit(f"offline_bench: expected allow, got {r.reason}")
    return (len(codes) / (time.perf_counter() - t),
            len(codes) / max(1e-9, time.process_time() - c0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "sdk"))
    from gateway_gate import Gate
    from loadtests.phone import Phone, sandbox_resident_token

    work = Path(tempfile.mkdtemp(prefix="offline-bench-"))
    keys_dir = work / "keys"
    prepare_keys(keys_dir)
    keys = seed.GatewayKeys.load(keys_dir)
    phone = Phone.new("EdDSA")
    with redis_server() as (redis_url, _):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with process([sys.executable, "-m", "gateway", "serve", "--port", str(port)],
                     env=gateway_env(redis_url, keys_dir, port, 1), log=work / "gw.log"):
            wait_http(base + "/healthz", timeout_s=60)

            async def enrol() -> str:
                import aiohttp

                async with aiohttp.ClientSession() as http:
                    token = await sandbox_resident_token(http, base)
                    await phone.enrol(http, token, base)
                return token

            asyncio.run(enrol())
            from loadtests.bench import resident_person, sealed_attributes

            token, person_id, _ = resident_person(base, keys_dir)
            attributes = sealed_attributes(base, keys, token)
            from gateway.adapters.keyfiles import KeyRingFiles
            from gateway.codec.jws import JwsKey

            anchor = JwsKey.of(KeyRingFiles(keys_dir, "trust").load().current()
                               .private_key.public_key()).to_jwk()
            secret = json.loads((keys_dir / "sandbox/demo-secrets.json").read_text())[GATE]
            states = {}
            for durable in (True, False):
                state = work / f"gate-{'durable' if durable else 'memory'}"
                Gate.provision(state, base_url=base, client_id=GATE,
                               client_secret=secret["client_secret"], scene="metro",
                               anchor_jwk=anchor)
                g = Gate(state, durable=durable)
                g.sync()
                states[durable] = g
    # the gateway is stopped: offline from here on
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    out: dict[str, Any] = {"codes_per_round": args.codes, "rounds": args.rounds,
                           "cpu": "one (sched_setaffinity)", "loadavg_before":
                           round(os.getloadavg()[0], 2), "results": {}}
    for durable, gate in states.items():
        name = "durable" if durable else "no_fsync"
        yk1s, yk2s = [], []
        for _ in range(args.rounds):
            yk1 = seed.issue_codes(keys, args.codes, person_id, attributes=attributes)
            yk2 = [phone.make_code(lifetime_s=60) for _ in range(args.codes)]
            yk1s.append(_rate(gate, yk1))
            yk2s.append(_rate(gate, yk2))
        m1, m2 = (statistics.median(x[0] for x in yk1s),
                  statistics.median(x[0] for x in yk2s))
        c1, c2 = (statistics.median(x[1] for x in yk1s),
                  statistics.median(x[1] for x in yk2s))
        out["results"][name] = {"yk1_per_s": round(m1), "yk2_per_s": round(m2),
                                "yk2_over_yk1": round(m2 / m1, 3),
                                "yk1_per_cpu_s": round(c1), "yk2_per_cpu_s": round(c2),
                                "yk2_over_yk1_cpu": round(c2 / c1, 3),
                                "rounds_yk1": [round(x[0]) for x in yk1s],
                                "rounds_yk2": [round(x[0]) for x in yk2s]}
        gate.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.offline_bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--codes", type=int, default=2000, help="codes per face per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON line (script/bench reads it)")
    args = p.parse_args(argv)
    report = run(args)
    report["loadavg_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(report))
        return 0
    print(json.dumps(report, indent=1))
    for name, r in report["results"].items():
        print(f"{name:9} YK1: {r['yk1_per_s']:6}/s ({r['yk1_per_cpu_s']} per CPU-s)  "
              f"YK2: {r['yk2_per_s']:6}/s ({r['yk2_per_cpu_s']} per CPU-s)  "
              f"YK2/YK1 {r['yk2_over_yk1']} wall, {r['yk2_over_yk1_cpu']} CPU  "
              f"(medians of {report['rounds']} rounds, one core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
