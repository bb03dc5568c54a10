"""Seeding for the benchmark and the locust scripts.

Two ways in, both used:

* **Library** (needs the gateway's keys dir; what the benchmark uses): pre-issue N fresh 渝快码
  codes with the gateway's own code key and holder-handle key (exactly what POST /v1/codes
  would return), codes whose signature is wrong (right kid, another key), and a resident
  access token minted with the gateway's token key when the sandbox's HTTP flow is absent.
* **HTTP** (what a load tester against any sandbox uses): GET /sandbox/v1/demo for the demo
  clients and gates, gate tokens by client_credentials, resident tokens by
  POST /sandbox/v1/upstream-assertions + RFC 8693 token exchange.

    python -m loadtests.seed --host http://127.0.0.1:8080 [--keys-dir keys] \
        [--out loadtests/out/seed.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
DEFAULT_APP = "app-ykb"
DEFAULT_SECTOR = "cq-resident-apps"


# ---------------------------------------------------------------- library seeding

@dataclass
class GatewayKeys:
    """The gateway's key material, loaded from its keys dir (as a worker would)."""

    code_ring: Any
    token_ring: Any
    data_keys: Any

    @classmethod
    def load(cls, keys_dir: Path) -> GatewayKeys:
        from gateway.adapters.keyfiles import KeyRingFiles, load_data_master_key
        from gateway.authz.datakeys import DataKeys

        return cls(KeyRingFiles(keys_dir, "code").load(), KeyRingFiles(keys_dir, "token").load(),
                   DataKeys(load_data_master_key(keys_dir, create=False, env_value=None)))

    def code_signer(self, alg: str | None = None) -> Any:
        """The current code key's signer, or (``alg``) the published key of that algorithm
        (e.g. the bench's pre-published SM2 next key: the gateway verifies next keys too)."""
        from gateway.codec import signer_for

        key = self.code_ring.current()
        if alg is not None and key.alg != alg:
            key = next(k for k in self.code_ring.keys if k.alg == alg and k.state == "next")
        return signer_for(key.private_key)


def new_person_id() -> str:
    """An internal person id (32 hexadecimal characters), as the identity registry makes."""
    return secrets.token_hex(16)


def issue_codes(keys: GatewayKeys, n: int, person_id: str, lifetime_s: int = 60,
                issued_at: int | None = None,
                attributes: dict[str, object] | None = None,
                alg: str | None = None) -> list[str]:
    """`n` fresh ykm codes for one person, each with its own nonce (each usable once), made as
    POST /v1/codes makes them: `attributes` (the person's concession and adult flag) sealed in
    the code's flags, so gates of fare scenes read no identity record."""
    from gateway.authz.datakeys import HolderCipher
    from gateway.codec import encode_ykm
    from gateway.services.codes import seal_attributes

    signer = keys.code_signer(alg)
    cipher = HolderCipher(keys.data_keys.code_holder_key)
    flags = seal_attributes(dict(attributes)) if attributes is not None else 0
    now = int(time.time()) if issued_at is None else issued_at
    out = []
    for _ in range(n):
        nonce = secrets.token_bytes(12)
        holder, sealed = cipher.seal(person_id, nonce, flags)
        out.append(encode_ykm(holder=holder, issued_at=now, lifetime_s=lifetime_s,
                              signer=signer, nonce=nonce, flags=sealed))
    return out


def issue_device_codes(keys: GatewayKeys, n: int, person_id: str, lifetime_s: int = 60,
                       issued_at: int | None = None,
                       attributes: dict[str, object] | None = None,
                       device_alg: str = "EdDSA") -> list[str]:
    """`n` fresh ``YK2:`` codes of one phone (docs/devices.md): a device certificate made as
    POST /v1/devices makes it (the gateway's code key; holder and `attributes` sealed with the
    serial as IV), then the reference phone's own signing with counters 1..n (each usable
    once). The device key is new for every call."""
    import os

    from gateway.authz.datakeys import HolderCipher
    from gateway.codec import encode_certificate, encode_yk2, normalise_device_key
    from gateway.codec import raw_public_key as _raw
    from gateway.services.codes import seal_attributes
    from loadtests.phone import Phone

    phone = Phone.new(device_alg)
    now = int(time.time()) if issued_at is None else issued_at
    serial = os.urandom(12)
    flags = seal_attributes(dict(attributes)) if attributes is not None else 0
    holder, sealed = HolderCipher(keys.data_keys.code_holder_key).seal(person_id, serial, flags)
    # not before the code key itself (its trust-list nbf): a bench whose keys are under a
    # minute old otherwise made certificates that every gate refused as unknown_issuer
    not_before = max(now - 60, int(keys.code_ring.current().created_at))
    cert = encode_certificate(
        signer=keys.code_signer(), device_alg=device_alg,
        device_key=normalise_device_key(device_alg, _raw(phone.signer.public_key())),
        serial=serial, holder=holder, flags=sealed, not_before=not_before,
        not_after=not_before + 86400)
    return [encode_yk2(certificate=cert, issued_at=now, lifetime_s=lifetime_s, counter=i,
                       signer=phone.signer) for i in range(1, n + 1)]


class _ForgedSigner:
    """Claims the gateway's kid but signs with another key: a well-formed code that must be
    denied `bad_signature`."""

    def __init__(self, kid: str) -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self._key = ed25519.Ed25519PrivateKey.generate()
        self.kid = kid
        self.alg = "EdDSA"

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def bad_signature_codes(keys: GatewayKeys, n: int, person_id: str,
                        lifetime_s: int = 60) -> list[str]:
    from gateway.codec import encode_ykm
    from gateway.services.codes import holder_handle

    forged = _ForgedSigner(keys.code_signer().kid)
    now = int(time.time())
    out = []
    for _ in range(n):
        nonce = secrets.token_bytes(12)
        out.append(encode_ykm(holder=holder_handle(keys.data_keys.code_holder_key, person_id,
                                                   nonce),
                              issued_at=now, lifetime_s=lifetime_s,
                              signer=forged, nonce=nonce))  # type: ignore[arg-type]
    return out


def junk_codes(n: int) -> list[str]:
    """What a gate's scanner reads off a wrong QR code: never a valid code."""
    kinds = ["YK1:", "ESSC1:", "", "https://example.cq.gov.cn/?q=", "YK1:$$$"]
    return [kinds[i % len(kinds)] + secrets.token_hex(8 + i % 40).upper() for i in range(n)]


def mint_resident_token(keys: GatewayKeys, issuer: str, person_id: str,
                        client_id: str = DEFAULT_APP, sector: str = DEFAULT_SECTOR,
                        ttl_s: int = 3600) -> str:
    """A resident access token as the token exchange would issue it (library fallback for a
    sandbox without the identity endpoints)."""
    from gateway.authz.tokens import AccessTokens, JwtSigner

    ring = keys.token_ring
    access = AccessTokens(JwtSigner(lambda: ring, time.time), issuer, time.time)
    token, _ = access.issue(
        client_id=client_id, kind="resident",
        sub=keys.data_keys.pairwise_subject(sector, person_id),
        scopes=("codes:issue", "me", "login:approve", "consents:decide"), ttl_s=ttl_s,
        sealed_person=keys.data_keys.seal_person_id(person_id, client_id))
    return token


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), "utf-8")
    return path


# ---------------------------------------------------------------- HTTP seeding

def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def http_json(method: str, url: str, *, form: dict[str, str] | None = None,
              body: Any = None, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, Any]:
    """A tiny blocking client (stdlib only, so seeding runs anywhere locust does)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    h = dict(headers or {})
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        h["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def client_token(host: str, client_id: str, secret: str, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    status, body = http_json("POST", f"{host}/oauth2/token", form=form,
                             headers={"Authorization": basic(client_id, secret)})
    if status != 200:
        raise RuntimeError(f"client_credentials for {client_id} answered {status}")
    return str(body["access_token"])


def resident_token_http(host: str, resident: str, app_id: str, app_secret: str,
                        platform: str = "ykb") -> str | None:
    """Upstream assertion from the sandbox, then token exchange; None if not available."""
    status, body = http_json("POST", f"{host}/sandbox/v1/upstream-assertions",
                             body={"resident": resident, "platform": platform})
    if status not in (200, 201) or not isinstance(body, dict):
        return None
    assertion = body.get("assertion") or body.get("subject_token") or body.get("jwt")
    if not assertion:
        return None
    status, tok = http_json("POST", f"{host}/oauth2/token", form={
        "grant_type": TOKEN_EXCHANGE, "subject_token": str(assertion),
        "subject_token_type": JWT_TOKEN_TYPE}, headers={"Authorization": basic(app_id,
                                                                               app_secret)})
    if status != 200 or not isinstance(tok, dict):
        return None
    return str(tok["access_token"])


def demo(host: str, keys_dir: Path | None) -> dict[str, Any]:
    """The sandbox demo data: GET /sandbox/v1/demo, else the keys dir's demo secrets."""
    status, body = http_json("GET", f"{host}/sandbox/v1/demo")
    if status == 200 and isinstance(body, dict):
        return body
    if keys_dir is None:
        raise RuntimeError("GET /sandbox/v1/demo is not available: pass --keys-dir")
    from gateway.adapters.keyfiles import read_private_pem

    creds = json.loads(read_private_pem(keys_dir / "sandbox" / "demo-secrets.json"))
    data = json.loads((Path(__file__).resolve().parent.parent / "gateway" / "data"
                       / "demo.json").read_text("utf-8"))
    clients = [{**c, "client_secret": creds.get(c["client_id"], {}).get("client_secret")}
               for c in data["clients"]]
    gates = [{**g, "client_secret": creds.get(g["client_id"], {}).get("client_secret")}
             for g in data["gates"]]
    residents = json.loads((Path(__file__).resolve().parent.parent / "gateway" / "data"
                            / "residents.json").read_text("utf-8"))["residents"]
    return {"clients": clients, "gates": gates,
            "residents": [{"id": r["id"]} for r in residents]}


#: Scenes whose policy admits the ykm face (the gate mix scans 渝快码).
YKM_SCENES = ("metro", "bus", "library", "scenic_spot", "community_door")


def seed_http(host: str, keys_dir: Path | None = None,
              residents: int = 6) -> dict[str, Any]:
    """Gate tokens (secret-based gates of ykm scenes) and resident tokens for locust."""
    d = demo(host, keys_dir)
    gates = []
    for g in d.get("gates", []):
        if g.get("client_secret") and g.get("scene") in YKM_SCENES:
            gates.append({"client_id": g["client_id"], "scene": g["scene"],
                          "token": client_token(host, g["client_id"], g["client_secret"])})
    app = next((c for c in d.get("clients", []) if c.get("client_id") == DEFAULT_APP), None)
    tokens: list[str] = []
    source = "http"
    if app is not None and app.get("client_secret"):
        for r in d.get("residents", [])[:residents]:
            rid = r.get("id") if isinstance(r, dict) else r
            t = resident_token_http(host, str(rid), DEFAULT_APP, app["client_secret"])
            if t is not None:
                tokens.append(t)
    if not tokens and keys_dir is not None:
        source = "library"
        keys = GatewayKeys.load(keys_dir)
        tokens = [mint_resident_token(keys, host, new_person_id()) for _ in range(residents)]
    return {"host": host, "gates": gates, "residents": tokens, "resident_source": source,
            "rps": [{"client_id": c["client_id"],
                     "token": client_token(host, c["client_id"], c["client_secret"])}
                    for c in d.get("clients", [])
                    if c.get("kind") == "rp" and c.get("client_secret")]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.seed")
    p.add_argument("--host", default="http://127.0.0.1:8080")
    p.add_argument("--keys-dir", type=Path)
    p.add_argument("--residents", type=int, default=6)
    p.add_argument("--out", type=Path, default=Path("loadtests/out/seed.json"))
    a = p.parse_args(argv)
    seed = seed_http(a.host.rstrip("/"), a.keys_dir, a.residents)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(seed, indent=1), "utf-8")
    print(f"seeded {len(seed['gates'])} gates, {len(seed['residents'])} residents "
          f"({seed['resident_source']}) -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
