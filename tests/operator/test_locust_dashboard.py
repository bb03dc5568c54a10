"""Issue 15's first "done when", tried as a new user would: the locust script in loadtests/ runs
headless for a few seconds against `python -m gateway serve --workers 2` (sandbox demo venues in
several districts, real Redis, the records and roll-ups in a real PostgreSQL), then an operator
signs in to /admin/dashboard in real Chromium and the traffic is there, read from the DOM: at
least as many scans and allows as locust sent and saw allowed (today's live counters and the
exported roll-ups), in every district the demo gates stand in. The screenshot is saved in
test-output/dashboard-locust.png (its path printed)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from tests.contract.test_record_store import drop_schema
from tests.contract.test_stats_store import drop_stats
from tests.oidc.test_browser import CHROMIUM_ARGS, chromium
from tests.operator.test_dashboard import OUTPUT, _cjk_font
from tests.redis_server import free_port
from tests.serving import serving

ROOT = Path(__file__).resolve().parents[2]
#: the demo gates locust's GateUsers scan at (secret-based gates of 渝快码 scenes) and their
#: venues' districts (gateway/data/venues.json): 渝中区, 沙坪坝区, 南岸区
LOCUST_DISTRICTS = {"500103", "500106", "500108"}
SECONDS = 8


def _sent(stats_csv: Path) -> tuple[int, int, int]:
    """(verify requests, of them expected allows, failures) from locust's --csv stats."""
    verifies = allows = failures = 0
    with open(stats_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row["Name"].startswith("verify"):
                failures += int(row["Failure Count"]) if row["Name"] != "Aggregated" else 0
                continue
            verifies += int(row["Request Count"])
            failures += int(row["Failure Count"])
            if row["Name"] == "verify allow":
                allows += int(row["Request Count"]) - int(row["Failure Count"])
    return verifies, allows, failures


async def _kpi(page: Page, selector: str) -> int:
    return int((await page.text_content(selector) or "0").strip())


@pytest.mark.slow
async def test_locust_traffic_over_demo_venues_shows_in_the_dashboard(
        tmp_path: Path, redis_url: str, database_url: str) -> None:
    _cjk_font()
    await drop_schema(database_url)
    await drop_stats(database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    keys = tmp_path / "keys"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "LOADTEST_"))}
    env.update(GATEWAY_KEYS_DIR=str(keys), GATEWAY_REDIS_URL=redis_url,
               GATEWAY_DATABASE_URL=database_url, GATEWAY_PORT=str(port),
               GATEWAY_REDIS_PREFIX=f"lt{port}:", GATEWAY_RATELIMIT_ENABLED="false",
               GATEWAY_SHUTDOWN_TIMEOUT_S="3", GATEWAY_METRICS_DIR=str(tmp_path / "metrics"))
    log = tmp_path / "serve.log"
    async with serving(env, tmp_path, log):
        # the locust script, headless, bounded: gates and residents of the demo (the key dir
        # lets it mint the rest of the city's codes, so the gates' mix is mostly allows)
        out = tmp_path / "lt"
        locust = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless",
            "-u", "20", "-r", "20", "-t", f"{SECONDS}s", "--stop-timeout", "2", "--host", base,
            "--csv", str(out), "--only-summary", "GateUser", "ResidentUser"],
            env={**env, "LOADTEST_KEYS_DIR": str(keys)}, cwd=ROOT, capture_output=True,
            text=True, timeout=120, check=False)
        stats_csv = Path(f"{out}_stats.csv")
        assert stats_csv.exists(), locust.stderr[-3000:]
        verifies, allows, failures = _sent(stats_csv)
        assert failures == 0, Path(f"{out}_failures.csv").read_text()[-3000:]
        assert verifies >= 10 and allows >= 5, (verifies, allows, locust.stderr[-2000:])

        r = subprocess.run([sys.executable, "-m", "gateway", "operators", "create", "vera",
                            "--role", "viewer"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        token = json.loads(r.stdout)["token"]

        OUTPUT.mkdir(exist_ok=True)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1100})
                await page.goto(base + "/admin/dashboard")
                await page.fill("input[name=token]", token)
                await page.click("button[type=submit]")
                await page.wait_for_selector("#kpi-scans")
                # the exporter moves the records (and their roll-ups) to PostgreSQL within a
                # few of its steps: reload until they are all there — as many as the live
                # counters (counted at each decision) and at least what locust sent — bounded
                deadline = time.monotonic() + 30

                async def exported() -> bool:
                    n = await _kpi(page, "#kpi-scans")
                    return n >= verifies and n == await _kpi(page, "#live-scans")

                while not await exported() and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    await page.reload()
                    await page.wait_for_selector("#kpi-scans")
                shown = {k: await _kpi(page, f"#{k}") for k in
                         ("kpi-scans", "kpi-allows", "live-scans", "live-allows")}
                assert shown["kpi-scans"] >= verifies and shown["kpi-allows"] >= allows, \
                    (shown, verifies, allows)
                assert shown["live-scans"] == shown["kpi-scans"], shown
                assert shown["live-allows"] == shown["kpi-allows"], shown
                # today, by district: every district of the demo gates saw decisions
                live: dict[str, int] = {}
                for row in await page.locator("#live-districts tbody tr[data-district]").all():
                    cells = await row.locator("td").all_text_contents()
                    live[str(await row.get_attribute("data-district"))] = int(cells[1])
                assert LOCUST_DISTRICTS <= {d for d, n in live.items() if n > 0}, live
                assert sum(live.values()) == shown["live-scans"], live
                assert "渝快码" in (await page.text_content("#forms") or "")
                assert await page.locator("#usage-chart").count() == 1
                shot = OUTPUT / "dashboard-locust.png"
                await page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot: {shot} (locust sent {verifies} verifications, "
                      f"{allows} allowed; dashboard {shown}; today by district {live})")
                # the roll-ups by district: each district filter shows its own traffic
                by_district = {}
                for district in sorted(LOCUST_DISTRICTS):
                    await page.select_option("select[name=district]", district)
                    await page.click("form.filters button[type=submit]")
                    await page.wait_for_selector("#kpi-scans")
                    by_district[district] = await _kpi(page, "#kpi-scans")
                assert all(n > 0 for n in by_district.values()), by_district
                assert sum(by_district.values()) == shown["kpi-scans"], by_district
            finally:
                await browser.close()
