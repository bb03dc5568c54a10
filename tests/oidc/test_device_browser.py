"""The kiosk page of the device grant (RFC 8628) in real headless Chromium: it renders under
its CSP, shows the client, the user code, the number to match and a QR that a phone camera
(zxing-cpp, from the page's screenshot) reads as verification_uri_complete; it follows the
public status as the resident scans and approves in the app, and as a card is tapped on the
kiosk's reader; no device code or token is ever in the page. Screenshots land in
test-output/ (kiosk-device-*.png)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import png
import zxingcpp
from playwright.async_api import Page, async_playwright

from tests.oidc.conftest import OP
from tests.oidc.test_browser import CHROMIUM_ARGS, chromium
from tests.oidc.test_device_grant import ACTIVE_CARD, Kiosk, app_decide, app_scan
from tests.oidc.test_device_grant import kiosk as kiosk  # the fixture, re-exported

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


def _read_screenshot_qr(data: bytes) -> list[str]:
    """Every QR code in an RGBA screenshot, as a phone camera would read it (zxing-cpp)."""
    width, height, rows, _ = png.Reader(bytes=data).asRGBA8()
    grey = bytearray()
    for row in rows:
        for i in range(0, len(row), 4):
            grey.append((row[i] * 299 + row[i + 1] * 587 + row[i + 2] * 114) // 1000)
    view = memoryview(bytes(grey)).cast("B", (height, width))
    return [b.text for b in zxingcpp.read_barcodes(view,
                                                   formats=zxingcpp.BarcodeFormat.QRCode)]


async def _open(page: Page, started: dict[str, str]) -> None:
    await page.goto(started["kiosk_uri"])
    assert "沙坪坝区政务服务中心" in (await page.text_content("h1") or "")
    assert (await page.text_content("#user-code")) == started["user_code"]
    html = await page.content()
    assert started["device_code"] not in html


async def test_kiosk_page_in_chromium_follows_app_and_card_approvals(
        kiosk: Kiosk) -> None:
    op: OP = kiosk.op
    OUTPUT.mkdir(exist_ok=True)
    token = await op.resident("r-chen-jing")
    csp_errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 1000})
            page.on("console", lambda m: csp_errors.append(m.text)
                    if "Content Security Policy" in m.text else None)
            # -- approved in the app ------------------------------------------------------
            started = await kiosk.start("openid profile")
            await _open(page, started)
            number = int(await page.text_content("#number") or "-1")
            auth_id = await page.get_attribute("main", "data-authorization") or ""
            await page.wait_for_selector("#status[data-status='pending']", timeout=10_000)
            shot = await page.locator("#qr").screenshot()
            assert _read_screenshot_qr(shot) == [started["verification_uri_complete"]]
            await page.screenshot(path=str(OUTPUT / "kiosk-device-pending.png"), full_page=True)

            scanned_uri = started["verification_uri_complete"]   # what the app's camera read
            user_code = parse_qs(urlsplit(scanned_uri).query)["user_code"][0]
            status, scanned = await app_scan(op, token, user_code)
            assert status == 200 and number in scanned["number_choices"]
            # (wait_for_function would need 'unsafe-eval', which the page's CSP refuses)
            await page.wait_for_selector("#status:has-text('Scanned')", timeout=10_000)
            status, _ = await app_decide(op, token, auth_id, "approve", {"number": number})
            assert status == 200
            await page.wait_for_selector("#status[data-status='approved']", timeout=10_000)
            await page.screenshot(path=str(OUTPUT / "kiosk-device-approved.png"), full_page=True)
            status, tokens = await kiosk.token(started["device_code"])
            assert status == 200 and "id_token" in tokens
            assert tokens["access_token"] not in await page.content()

            # -- approved by a card tap on the kiosk's reader ---------------------------------
            started = await kiosk.start("openid")
            await _open(page, started)
            await page.wait_for_selector("#status[data-status='pending']", timeout=10_000)
            status, tapped = await kiosk.tap(started["device_code"], ACTIVE_CARD, "browser-1")
            assert status == 200, tapped
            await page.wait_for_selector("#status:has-text('Card tapped')", timeout=10_000)
            await page.screenshot(path=str(OUTPUT / "kiosk-device-tapped.png"), full_page=True)
            assert (await kiosk.confirm(started["device_code"], "approve"))[0] == 200
            await page.wait_for_selector("#status[data-status='approved']", timeout=10_000)
            assert (await kiosk.token(started["device_code"]))[0] == 200
        finally:
            await browser.close()
    assert not csp_errors
