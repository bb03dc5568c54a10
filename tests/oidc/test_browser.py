"""The authorize page in a real headless browser (Debian's chromium through Playwright):
the page renders under its CSP, shows the QR and the number, polls, and after the resident
approves in the app, navigates to the relying party's redirect URI with code, state and iss."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from tests.oidc.conftest import JKB_CB, OP, read_qr

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium() -> str:
    path = os.environ.get("GATEWAY_TEST_CHROMIUM") or shutil.which("chromium")
    assert path, "chromium is required: apt-get install -y chromium"
    return path


@pytest.fixture
async def callback() -> AsyncIterator[list[dict[str, list[str]]]]:
    """The relying party's redirect URI (http://127.0.0.1:8400/callback) on loopback."""
    hits: list[dict[str, list[str]]] = []

    async def cb(request: web.Request) -> web.Response:
        hits.append({k: request.query.getall(k) for k in request.query.keys()})
        return web.Response(text="<!doctype html><title>RP</title><p id=done>signed in</p>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/callback", cb)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 8400)
    await site.start()
    try:
        yield hits
    finally:
        await runner.cleanup()


async def test_browser_scan_to_login_redirects_to_the_relying_party(
        op: OP, callback: list[dict[str, list[str]]]) -> None:
    req = op.auth_request()
    token = await op.resident("r-chen-jing")
    csp_errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.on("console", lambda m: csp_errors.append(m.text)
                    if "Content Security Policy" in m.text else None)
            await page.goto(op.base + req.url)
            assert "警快办" in (await page.text_content("h1") or "")
            number = int(await page.text_content("#number") or "-1")
            src = await page.get_attribute("#qr", "src") or ""
            qr = read_qr(base64.b64decode(src.split(",", 1)[1]))
            sid = await page.get_attribute("main", "data-session") or ""
            await page.screenshot(path="/tmp/oidc-login-page.png")

            status, scanned = await op.scan(token, qr)
            assert status == 200 and number in scanned["number_choices"]
            # (wait_for_function would need 'unsafe-eval', which the page's CSP refuses)
            await page.wait_for_selector("#status:has-text('Scanned')", timeout=10_000)
            status, _ = await op.approve(token, sid, number)
            assert status == 200
            await page.wait_for_url(JKB_CB + "?*", timeout=15_000)
            await page.wait_for_selector("#done")
            await page.screenshot(path="/tmp/oidc-login-redirected.png")
            landed = page.url
        finally:
            await browser.close()
    assert not csp_errors
    assert len(callback) == 1
    q = callback[0]
    assert q["state"] == [req.state] and q["iss"] == [op.base]
    assert parse_qs(urlsplit(landed).query)["code"] == q["code"]
    status, body = await op.token({"grant_type": "authorization_code", "code": q["code"][0],
                                   "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 200 and "id_token" in body
