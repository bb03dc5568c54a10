"""Locust scripts (FastHttpUser) for the gateway: the morning rush (issue 7).

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080

Users (the seeding step runs once at test start — loadtests/seed.py: GET /sandbox/v1/demo,
client_credentials for the gates and relying parties, sandbox upstream assertions + RFC 8693
token exchange for the residents; `LOADTEST_KEYS_DIR=keys` lets it fall back to minting
resident tokens with the gateway's own key when the sandbox's HTTP flow is absent):

* `GateUser`      — the gate mix: scan a fresh code (allow), a code already used (expected
                    deny `replayed`), junk from a wrong QR code (expected deny `malformed`),
                    8 : 1 : 1. Fresh codes come from the ResidentUsers; with
                    `LOADTEST_KEYS_DIR` (a local gateway whose keys you hold) the rest of the
                    city's codes are minted with the gateway's code key when none is waiting,
                    so the mix is mostly allows; without it a gate with no code waiting
                    scans junk.
* `ResidentUser`  — a resident app refreshing its code every `refresh_in` seconds (POST
                    /v1/codes); the fresh codes feed the gates.
* `PhoneUser`     — a phone with device-bound codes (loadtests/phone.py, docs/devices.md):
                    enrols once (POST /v1/devices/challenge + POST /v1/devices), then makes a
                    `YK2:` code offline every 20 s (no request) for the gates to scan, and
                    renews its certificate when due. At most GATEWAY_DEVICES_MAX phones per
                    demo resident: a phone refused 409 stops.
* `LoginUser`     — OIDC scan-to-login: /oauth2/authorize page → QR read back (zxing-cpp) →
                    scan → approve with the matched number → poll → code redeemed with PKCE.
* `ConsentUser`   — a service-hall RP fetching the status of a consent the resident approved
                    (GET /v1/consents/{id}) and querying a certificate now and then.

A deny that is the expected answer is a success; anything else (an unexpected status or
reason, a 429 or a 503) is a failure. The per-user rates stay inside the default limits
(docs/rate-limits.md): issuance 30/min per resident, login pages 30/min per IP.
"""

from __future__ import annotations

import collections
import itertools
import os
import secrets
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from locust import FastHttpUser, between, constant_pacing, events, task
from locust.exception import StopUser

from loadtests import seed
from loadtests.flows import parse_login_page, pkce_pair

#: Shared between users (one locust process, gevent): fresh codes to scan, used ones to replay.
FRESH: collections.deque[str] = collections.deque(maxlen=5000)
USED: collections.deque[str] = collections.deque(maxlen=500)
STATE: dict[str, Any] = {}
_LOCK = threading.Lock()
_COUNTER = itertools.count()
#: GateUsers take the demo gates in turn (their own counter: the request-id counter moves
#: with every request, and left some gates — whole districts — with no traffic)
_GATE_TURN = itertools.count()

LOGIN_RP = "rp-jingkuaiban"
LOGIN_CB = "http://127.0.0.1:8400/callback"
CONSENT_RP = "rp-service-hall"
HALL_GATE = "gate-hall-shapingba"


def seeded(host: str) -> dict[str, Any]:
    """Seed once per locust process (the first user to start does it)."""
    with _LOCK:
        if "seed" not in STATE:
            keys = os.environ.get("LOADTEST_KEYS_DIR")
            STATE["seed"] = seed.seed_http(host.rstrip("/"),
                                           Path(keys) if keys else None)
            STATE["demo"] = seed.demo(host.rstrip("/"), Path(keys) if keys else None)
            if keys:
                STATE["press"] = _code_press(host.rstrip("/"), Path(keys))
        return dict(STATE["seed"])


def _code_press(host: str, keys_dir: Path) -> tuple[Any, str, Any] | None:
    """(keys, person id, sealed attributes) to mint fresh codes with the gateway's own code
    key — the rest of the city's residents showing codes — for a gateway whose key dir the
    load tester holds. The person and the attributes are a real demo resident's (read back from
    one code the gateway issued), so the gates' answers are real allows."""
    from loadtests.bench import resident_person, sealed_attributes

    keys = seed.GatewayKeys.load(keys_dir)
    token, person_id, _ = resident_person(host, keys_dir)
    return keys, person_id, sealed_attributes(host, keys, token)


def _press_codes(n: int = 100) -> bool:
    """Refill FRESH with n minted codes; False without a key dir (no press)."""
    press = STATE.get("press")
    if press is None:
        return False
    keys, person_id, attributes = press
    FRESH.extend(seed.issue_codes(keys, n, person_id, attributes=attributes))
    return True


@events.test_start.add_listener
def _on_start(environment: Any, **_: Any) -> None:
    if environment.host:
        seeded(environment.host)


def _rid() -> str:
    return f"lt-{os.getpid()}-{next(_COUNTER)}-{secrets.token_hex(3)}"


def _resident_auth(host: str) -> dict[str, str]:
    """The bearer header of one of the seeded residents (round robin over the users)."""
    tokens = seeded(host)["residents"]
    if not tokens:
        raise RuntimeError("seeding produced no resident token")
    return {"Authorization": f"Bearer {tokens[next(_COUNTER) % len(tokens)]}"}


def _fail(resp: Any, what: str) -> None:
    resp.failure(f"{what}: HTTP {resp.status_code} {str(resp.text)[:200]}")


class GateUser(FastHttpUser):
    """A gate at the morning rush: mostly fresh codes, some replays, some junk."""

    weight = 6
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        s = seeded(self.host)
        gates = s["gates"]
        if not gates:
            raise RuntimeError("seeding found no secret-based ykm gate")
        g = gates[next(_GATE_TURN) % len(gates)]
        self.scene = g["scene"]
        self.auth = {"Authorization": f"Bearer {g['token']}"}

    def _verify(self, code: str, expect: tuple[str, str], name: str) -> None:
        body = {"code": code, "scene": self.scene, "request_id": _rid()}
        with self.client.post("/v1/codes/verify", json=body, headers=self.auth, name=name,
                              catch_response=True) as resp:
            if resp.status_code != 200:
                _fail(resp, name)
                return
            j = resp.json()
            if (j.get("decision"), j.get("reason")) != expect:
                resp.failure(f"{name}: expected {expect}, got "
                             f"{(j.get('decision'), j.get('reason'))}")
            else:
                resp.success()

    @task(8)
    def scan_fresh_code(self) -> None:
        if not FRESH and not _press_codes():
            self.scan_junk()   # no resident has shown a code yet: the scanner reads junk
            return
        code = FRESH.popleft()
        self._verify(code, ("allow", "ok"), "verify allow")
        USED.append(code)

    @task(1)
    def scan_replayed_code(self) -> None:
        if not USED:
            return
        self._verify(USED[-1], ("deny", "replayed"), "verify deny replayed")

    @task(1)
    def scan_junk(self) -> None:
        self._verify(seed.junk_codes(1 + next(_COUNTER) % 5)[-1], ("deny", "malformed"),
                     "verify deny junk")


class ResidentUser(FastHttpUser):
    """A resident app showing a 渝快码 and refreshing it every `refresh_in` seconds."""

    weight = 3
    wait_time = constant_pacing(20)

    def on_start(self) -> None:
        self.auth = _resident_auth(self.host)

    @task
    def refresh_code(self) -> None:
        with self.client.post("/v1/codes", json={"face": "ykm"}, headers=self.auth,
                              name="issue code", catch_response=True) as resp:
            if resp.status_code != 201:
                _fail(resp, "issue code")
                return
            FRESH.append(resp.json()["code"])
            resp.success()


class PhoneUser(FastHttpUser):
    """A phone making device-bound codes on its own (module docstring)."""

    weight = 1
    wait_time = constant_pacing(20)

    def on_start(self) -> None:
        from loadtests.phone import Phone

        self.auth = _resident_auth(self.host)
        self.phone = Phone.new("EdDSA" if next(_COUNTER) % 2 else "ES256")
        if not self._enrol():
            raise StopUser()

    def _enrol(self) -> bool:
        with self.client.post("/v1/devices/challenge", headers=self.auth,
                              name="device challenge", catch_response=True) as resp:
            if resp.status_code != 201:
                _fail(resp, "device challenge")
                return False
            challenge = resp.json()["challenge"]
            resp.success()
        with self.client.post("/v1/devices", json=self.phone.enrolment_body(challenge),
                              headers=self.auth, name="device enrol",
                              catch_response=True) as resp:
            if resp.status_code == 409:  # this resident has the maximum: expected, stop
                resp.success()
                return False
            if resp.status_code not in (200, 201):
                _fail(resp, "device enrol")
                return False
            self.phone.accept(resp.json())
            resp.success()
        return True

    @task
    def show_offline_code(self) -> None:
        if self.phone.needs_renewal():
            self._enrol()
        FRESH.append(self.phone.make_code())


class LoginUser(FastHttpUser):
    """Scan-to-login end to end, paced under the per-IP login-page limit (30/min)."""

    fixed_count = 1
    wait_time = constant_pacing(3)

    def on_start(self) -> None:
        s = seeded(self.host)
        demo = STATE["demo"]
        rp = next((c for c in demo.get("clients", []) if c.get("client_id") == LOGIN_RP), {})
        self.rp_basic = seed.basic(LOGIN_RP, str(rp.get("client_secret")))
        self.resident = {"Authorization": f"Bearer {s['residents'][0]}"}

    @task
    def scan_to_login(self) -> None:
        verifier, challenge = pkce_pair()
        q = {"response_type": "code", "client_id": LOGIN_RP, "redirect_uri": LOGIN_CB,
             "scope": "openid profile", "state": secrets.token_urlsafe(12),
             "nonce": secrets.token_urlsafe(12), "code_challenge": challenge,
             "code_challenge_method": "S256"}
        with self.client.get(f"/oauth2/authorize?{urlencode(q)}", name="login page",
                             catch_response=True) as resp:
            if resp.status_code != 200:
                _fail(resp, "login page")
                return
            try:
                sid, qr, number = parse_login_page(resp.text or "")
            except ValueError as exc:
                resp.failure(str(exc))
                return
            cookie = resp.headers.get("Set-Cookie", "").split(";", 1)[0]
        with self.client.post("/v1/login-sessions/scan", json={"qr": qr},
                              headers=self.resident, name="login scan",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                _fail(resp, "login scan")
                return
        with self.client.post(f"/v1/login-sessions/{sid}/approve", json={"number": number},
                              headers=self.resident, name="login approve",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                _fail(resp, "login approve")
                return
        with self.client.get(f"/v1/login-sessions/{sid}", headers={"Cookie": cookie},
                             name="login poll", catch_response=True) as resp:
            body = resp.json() if resp.status_code == 200 else {}
            if body.get("status") != "approved" or not body.get("redirect_to"):
                resp.failure(f"login poll: {resp.status_code} {body.get('status')}")
                return
            code = parse_qs(urlparse(body["redirect_to"]).query).get("code", [""])[0]
        with self.client.post("/oauth2/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": LOGIN_CB,
                "code_verifier": verifier}, headers={"Authorization": self.rp_basic},
                name="login token", catch_response=True) as resp:
            if resp.status_code != 200 or "id_token" not in (resp.text or ""):
                _fail(resp, "login token")


class ConsentUser(FastHttpUser):
    """A service hall's system re-reading a consent its visitor approved."""

    fixed_count = 1
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        s = seeded(self.host)
        demo = STATE["demo"]
        secrets_by_id = {c.get("client_id"): c.get("client_secret")
                         for c in demo.get("clients", []) + demo.get("gates", [])}
        host = self.host.rstrip("/")
        resident = {"Authorization": f"Bearer {s['residents'][-1]}"}
        rp_token = seed.client_token(host, CONSENT_RP, str(secrets_by_id[CONSENT_RP]))
        self.rp = {"Authorization": f"Bearer {rp_token}"}
        gate_token = seed.client_token(host, HALL_GATE, str(secrets_by_id[HALL_GATE]))
        self.consent_id: str | None = None
        # The hall learns the visitor's pairwise subject by a code scan at its counter.
        _, issued = seed.http_json("POST", f"{host}/v1/codes", body={"face": "ykm"},
                                   headers=resident)
        _, answer = seed.http_json("POST", f"{host}/v1/codes/verify", body={
            "code": issued["code"], "scene": "service_hall", "request_id": _rid()},
            headers={"Authorization": f"Bearer {gate_token}"})
        status, consent = seed.http_json("POST", f"{host}/v1/consents", body={
            "subject": answer["subject"], "certificate_types": ["resident_id"],
            "purpose": "general", "expires_in": 3600, "max_uses": 1000}, headers=self.rp)
        if status != 201:
            # e.g. 404 unknown_subject while no flow feeds the consents' subject index: say
            # so once and retire this user rather than count a setup gap as load failures.
            if not STATE.get("consent_warned"):
                STATE["consent_warned"] = True
                print(f"ConsentUser: consent request answered {status} "
                      f"{(consent or {}).get('reason')}: consent fetches not exercised")
            raise StopUser()
        status, _ = seed.http_json(
            "POST", f"{host}/v1/me/consents/{consent['consent_id']}/approve", body={},
            headers=resident)
        if status != 200:
            raise RuntimeError(f"consent approval answered {status}")
        self.consent_id = str(consent["consent_id"])

    @task(5)
    def fetch_consent(self) -> None:
        with self.client.get(f"/v1/consents/{self.consent_id}", headers=self.rp,
                             name="consent fetch", catch_response=True) as resp:
            if resp.status_code != 200 or resp.json().get("status") != "authorised":
                _fail(resp, "consent fetch")

    @task(1)
    def query_certificate(self) -> None:
        with self.client.post("/v1/certificates/query", json={"consent_id": self.consent_id},
                              headers=self.rp, name="certificate query",
                              catch_response=True) as resp:
            if resp.status_code != 200:
                _fail(resp, "certificate query")

