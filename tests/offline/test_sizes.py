"""The size table of docs/code-format.md §7 for the codes the sandbox really issues: measured
on live codes (POST /v1/codes, both faces), rendered and read back by an independent decoder."""

from __future__ import annotations

from gateway.qr import qr_version, render_png
from loadtests.flows import read_qr_png
from tests.web.conftest import Gateway


async def _issue(gw: Gateway, face: str, region: str | None = None) -> str:
    token = await gw.resident_token("r-zhang-wei")
    body = {"face": face, **({"region": region} if region else {})}
    r = await gw.client.post("/v1/codes", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status == 201, await r.text()
    return str((await r.json())["code"])


async def test_sandbox_code_sizes(gw: Gateway) -> None:
    ykm = await _issue(gw, "ykm")
    essc = await _issue(gw, "essc")
    assert ykm.startswith("YK1:") and len(ykm) == 160 and qr_version(ykm) == 7
    assert essc.startswith("ESSC1:") and len(essc) == 182 and qr_version(essc) == 8
    for code in (ykm, essc):
        assert read_qr_png(render_png(code)) == [code]
