"""Where an uploaded offline scan's CPU goes (issue 14; docs/performance.md "Offline upload"):
the real app in this process (aiohttp test server, sandbox keys, a private redis-server), a
gate token, fresh 渝快码 codes with their attributes sealed (as POST /v1/codes makes them),
uploaded in batches of 500 — and, on codes of the same kind, the parts alone:

* ``signature``: the Ed25519 check alone (libsodium, as the code face makes it);
* ``face_check``: the code face's whole check (decode, key lookup, signature, window, holder
  handle opened) — what no bulk path can avoid per scan;
* ``upload``: POST /v1/gates/offline-scans end to end in this process — HTTP, JSON, the bulk
  pipeline, the claims' script calls, the answer, and the exporter draining the outbox into
  the sandbox's in-memory store (no PostgreSQL here: records_bench measures that part) — minus
  the test client's own work, measured on a request the server answers at once;
* ``use_case``: `OfflineUploads.upload` called directly on the parsed scans, its answer's
  bytes built — the upload without HTTP and without parsing the body;
* ``redis``: the redis-server's CPU per uploaded scan.

CPU time of this process (and of redis-server, from /proc), not wall time: the box is shared.
Rounds interleave the parts, medians are printed.

    python -m loadtests.upload_floor [--batches 12] [--rounds 3] [--json]
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

BATCH = 500


def _basic(client_id: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def _measure(args: argparse.Namespace, redis_url: str, redis_pid: int) -> dict[str, Any]:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import build_app
    from gateway.authz.tokens import AccessTokenClaims
    from gateway.codec import decode
    from gateway.logs import configure as configure_logs
    from gateway.services.codes import SEALABLE, open_attributes
    from gateway.services.offline import results_body
    from gateway.settings import Settings
    from gateway.timefmt import rfc3339
    from gateway.web import lane
    from gateway.web.offline import OFFLINE
    from loadtests import seed
    from loadtests.bench import free_port, tree_cpu_s

    port = free_port()
    keys_dir = Path(tempfile.mkdtemp(prefix="upload-floor-")) / "keys"
    settings = Settings(env="sandbox", host="127.0.0.1", port=port,
                        issuer=f"http://127.0.0.1:{port}", keys_dir=keys_dir,
                        redis_url=redis_url, log_level="warning")
    configure_logs("json", "warning")  # as the bench's `gateway serve` runs (GATEWAY_LOG_*)
    app = build_app(settings)
    server = TestServer(app, host="127.0.0.1", port=port)
    client = TestClient(server)
    await client.start_server()
    assert isinstance(server.runner, web.AppRunner)
    lane.install(server.runner)
    try:
        keys = seed.GatewayKeys.load(keys_dir)
        gate_id = "gate-metro-l1-xiaoshizi"
        secret = json.loads((keys_dir / "sandbox/demo-secrets.json").read_text())[gate_id]
        r = await client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                              headers={"Authorization": _basic(gate_id,
                                                               secret["client_secret"])})
        token = (await r.json())["access_token"]
        r = await client.post("/sandbox/v1/upstream-assertions",
                              json={"resident": "r-zhang-wei", "platform": "ykb"})
        assertion = (await r.json())["assertion"]
        app_secret = json.loads((keys_dir / "sandbox/demo-secrets.json").read_text())["app-ykb"]
        r = await client.post("/oauth2/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": assertion,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
            headers={"Authorization": _basic("app-ykb", app_secret["client_secret"])})
        resident = (await r.json())["access_token"]
        r = await client.post("/v1/codes", json={"face": "ykm"},
                              headers={"Authorization": f"Bearer {resident}"})
        sample = decode(str((await r.json())["code"])).claims
        from gateway.authz.datakeys import HolderCipher

        person_id, flags = HolderCipher(keys.data_keys.code_holder_key).open(
            sample.holder, sample.nonce, sample.flags)
        attributes = open_attributes(flags, tuple(sorted(SEALABLE)))
        uploads = app[OFFLINE]
        face = uploads._pipeline._codes  # the part it times
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        n = args.batches * BATCH
        rows: dict[str, list[float]] = {"upload": [], "use_case": [], "face_check": [],
                                        "signature": [], "client_overhead": [], "redis": []}
        run = 0

        def fresh() -> tuple[list[str], float]:
            now = int(time.time())
            return seed.issue_codes(keys, n, str(person_id), issued_at=now,
                                    attributes=attributes), now + 1

        for _ in range(args.rounds):
            run += 1
            codes, at = fresh()
            stamp = rfc3339(at)
            bodies = [json.dumps({"scans": [
                {"request_id": f"u{run}-{b + i}", "code": c, "scanned_at": stamp,
                 "local_decision": "allow"} for i, c in enumerate(codes[b:b + BATCH])]},
                separators=(",", ":")).encode() for b in range(0, n, BATCH)]
            # the client's share: the same bodies, answered at once (401 before any work)
            c0 = time.process_time()
            for body in bodies:
                r = await client.post("/v1/gates/offline-scans", data=body,
                                      headers={"Content-Type": "application/json"})
                await r.read()
            rows["client_overhead"].append((time.process_time() - c0) / n * 1e6)
            prof = None
            if args.profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            r0, c0 = tree_cpu_s(redis_pid), time.process_time()
            for body in bodies:
                r = await client.post("/v1/gates/offline-scans", data=body, headers=auth)
                got = await r.read()
                if r.status != 200 or got.count(b'"confirmed"') != BATCH:
                    raise SystemExit(f"upload_floor: {r.status} {got[:300]!r}")
            await asyncio.sleep(0.3)  # the exporter drains this round's records
            cpu, r1 = time.process_time() - c0, tree_cpu_s(redis_pid)
            if prof is not None:
                import pstats

                prof.disable()
                order = os.environ.get("SORT", "tottime")
                pstats.Stats(prof, stream=sys.stderr).sort_stats(order).print_stats(45)
            rows["upload"].append(cpu / n * 1e6)
            if r0 is not None and r1 is not None:
                rows["redis"].append((r1 - r0) / n * 1e6)
            # the use case alone: no HTTP, no JSON parsing (the answer's bytes still built)
            codes, at = fresh()
            stamp = rfc3339(at)
            batches = [[{"request_id": f"s{run}-{b + i}", "code": c, "scanned_at": stamp,
                         "local_decision": "allow"} for i, c in enumerate(codes[b:b + BATCH])]
                       for b in range(0, n, BATCH)]
            claims = AccessTokenClaims(jti="bench", client_id=gate_id, kind="gate", sub=gate_id,
                                       scopes=frozenset({"codes:verify"}), exp=2**31, iat=0,
                                       scene="metro")
            c0 = time.process_time()
            for items in batches:
                answered = await uploads.upload(claims, items)
                if results_body(answered).count(b'"confirmed"') != BATCH:
                    raise SystemExit("upload_floor: the use case did not confirm its batch")
            await asyncio.sleep(0.3)
            rows["use_case"].append((time.process_time() - c0) / n * 1e6)
            codes, at = fresh()
            c0 = time.process_time()
            for i, c in enumerate(codes):
                face.check(c, gate_id, f"f{run}-{i}", at, at)
            rows["face_check"].append((time.process_time() - c0) / n * 1e6)
            decoded = [decode(c) for c in codes]
            key = face._lookup(decoded[0].claims.issuer, decoded[0].claims.kid)
            assert key is not None
            c0 = time.process_time()
            for d in decoded:
                key.verify(d.signed, d.signature)
            rows["signature"].append((time.process_time() - c0) / n * 1e6)
        med = {k: round(statistics.median(v), 1) for k, v in rows.items() if v}
        server_us = round(med["upload"] - med["client_overhead"], 1)
        return {"scans_per_round": n, "rounds": args.rounds, "batch": BATCH,
                "cpu_us_per_scan_medians": med, "server_us_per_scan": server_us,
                "beyond_face_check_us": round(server_us - med["face_check"], 1),
                "rounds_us": {k: [round(x, 1) for x in v] for k, v in rows.items()},
                "two_core_ceiling_scans_per_s": round(
                    2e6 / (server_us + med.get("redis", 0.0))),
                "two_core_signature_only_scans_per_s": round(2e6 / med["signature"])}
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    from loadtests.bench import redis_server

    p = argparse.ArgumentParser(prog="python -m loadtests.upload_floor",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=12, help="batches of 500 per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", action="store_true", help="cProfile of the uploads, stderr")
    args = p.parse_args(argv)
    load0 = os.getloadavg()[0]
    with redis_server() as (url, pid):
        out = asyncio.run(_measure(args, url, pid))
    out["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
