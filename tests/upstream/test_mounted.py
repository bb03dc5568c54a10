"""The sandbox apps mounted as sub-applications under /sandbox/upstreams/<name>, as the sandbox
gateway does, serve the real clients unchanged."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.adapters.sandbox import (
    ESSC_ISSUER_PREFIX,
    ESSC_SANDBOX,
    YKB_ISSUER,
    YKB_SANDBOX,
    build_sandbox_upstreams,
)
from gateway.adapters.upstream import CertificateLibraryClient, EsscPlatformClient, YkbClient
from gateway.clock import FrozenClock
from gateway.services.upstream import load_residents

from .conftest import GATEWAY_ISSUER, POLICY


async def test_clients_work_against_mounted_sandboxes(tmp_path: Path) -> None:
    clock = FrozenClock()
    residents = load_residents()
    parent = web.Application()
    subs = build_sandbox_upstreams(residents, tmp_path, GATEWAY_ISSUER, clock=clock)
    for name, sub in subs.items():
        parent.add_subapp(f"/sandbox/upstreams/{name}", sub)
    server = TestServer(parent, host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("/sandbox/upstreams"))
        async with aiohttp.ClientSession() as s:
            ykb = YkbClient(s, base + "/ykb", issuer=YKB_ISSUER, audience=GATEWAY_ISSUER,
                            clock=clock, policy=POLICY)
            essc = EsscPlatformClient(s, base + "/essc", regions=("CQ", "SC"),
                                      issuer_prefix=ESSC_ISSUER_PREFIX,
                                      audience=GATEWAY_ISSUER, clock=clock, policy=POLICY)
            certlib = CertificateLibraryClient(s, base + "/certlib", clock=clock, policy=POLICY)
            ident = await ykb.verify_assertion(subs["ykb"][YKB_SANDBOX]
                                               .issue_assertion("r-wang-lei"))
            assert ident.account_id == "ykm-7f3a0003"
            async with s.post(base + "/essc/SC/assertions", json={"resident": "r-li-na"}) as r:
                assert r.status == 201
                ident = await essc.verify_assertion((await r.json())["assertion"])
            assert ident.region == "SC"
            assert subs["essc"][ESSC_SANDBOX].issue_code("essc-sc-9a1b2002", "SC")
            assert len(await essc.code_keys()) == 2
            certs = await certlib.fetch(ident.citizen_id, ["degree", "qualification"])
            assert {c.type for c in certs} == {"degree", "qualification"}
            # admin knobs are off when mounted in the gateway
            async with s.post(base + "/ykb/__fault", json={"mode": "error"}) as r:
                assert r.status in (404, 405)
            async with s.post(base + "/ykb/assertions",
                              json={"resident": "r-wang-lei", "audience": "https://x"}) as r:
                token = (await r.json())["assertion"]
            assert (await ykb.verify_assertion(token)).account_id == "ykm-7f3a0003"
    finally:
        await server.close()
