"""Paired A/B of the token endpoint (client_credentials) or introspection: an earlier revision
against the working tree, both up at once on one Redis (each under its own key prefix), runs
alternated old/new, new/old, … (loadtests/ab.py's method for the verify path), every answer
checked by loadtests/wrk/oauth.lua; prints each run and the medians. The two servers are
started by ab.old_and_new: each revision with its own key dir and environment.

    python -m loadtests.ab_oauth --old HEAD~1 --scenario token      # 4 pairs, 2 workers, 8 s
    python -m loadtests.ab_oauth --old HEAD~1 --scenario introspect --rounds 6
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from loadtests import ab, bench, seed

GATE = "gate-metro-l1-xiaoshizi"
FORM = f"grant_type=client_credentials&scope={bench.PEER_SCOPE}"


def run(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    wrk = bench.ensure_wrk()
    results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with ab.old_and_new(args.old, "ab-oauth", args.workers) as pair:

        def env_for(name: str) -> dict[str, str]:
            base, secret = pair.bases[name], bench.demo_secret(pair.keys_dirs[name], GATE)
            auth = seed.basic(GATE, secret)
            if args.scenario == "token":
                return {"WRK_PATH": "/oauth2/token", "WRK_BODY": FORM, "WRK_AUTH": auth,
                        "WRK_CHECK": "token"}
            token = seed.client_token(base, GATE, secret, bench.PEER_SCOPE)
            return {"WRK_PATH": "/oauth2/introspect", "WRK_BODY": f"token={token}",
                    "WRK_AUTH": auth, "WRK_CHECK": "introspect"}

        envs = {name: env_for(name) for name in pair.bases}
        for name, base in pair.bases.items():
            bench.run_wrk(wrk, "warm-up", base, "oauth.lua", envs[name], threads=1,
                          connections=args.connections, duration_s=2)
        for i in range(args.rounds):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                r = bench.run_wrk(wrk, name, pair.bases[name], "oauth.lua", envs[name],
                                  threads=1, connections=args.connections,
                                  duration_s=args.duration, server_pid=pair.pids[name],
                                  redis_pid=pair.redis_pid)
                row = {"checked_per_s": r.expected_rps, "p99_ms": r.p99_ms,
                       "server_us": r.server_cpu_us_per_req,
                       "redis_us": r.redis_cpu_us_per_req, "other": r.other,
                       "loadavg": r.note}
                results[name].append(row)
                print(f"{name}  {row}", flush=True)
    ab.print_medians(results, ("checked_per_s", "p99_ms", "server_us", "redis_us"))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, help="the git revision to compare against")
    p.add_argument("--scenario", choices=("token", "introspect"), default="token")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
