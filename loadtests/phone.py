"""A reference phone for device-bound codes (docs/devices.md): it enrols a device key, keeps
it, renews its certificate, and makes ``YK2:`` codes with no network at all.

What an app developer's phone must do, in about a hundred lines:

* generate the device key on the phone (here: Ed25519 or P-256 with ``cryptography``; on a real
  phone: the Android Keystore / iOS Secure Enclave) — the private key never leaves it;
* ``POST /v1/devices/challenge`` then ``POST /v1/devices`` with the public key and the key's
  signature over ``"cq-gateway device enrolment v1\\n" + challenge + "\\n" + public_key``;
* keep the certificate, and renew (the same two calls, same key) after ``renew_after``;
* for every code: add one to the counter and **store it before showing the code** (a counter is
  never reused, even after a crash), then sign ``"YK2:" ‖ certificate ‖ issued_at ‖
  lifetime_s ‖ counter`` (gateway.codec.encode_yk2 does exactly that).

Command line (state in a 0600 JSON file; the private key is in it, like a keystore would be)::

    python -m loadtests.phone enrol --base http://127.0.0.1:8080 --state phone.json
    python -m loadtests.phone code --state phone.json          # offline: prints one code
    python -m loadtests.phone renew --base http://127.0.0.1:8080 --state phone.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.codec import (
    Ed25519Signer,
    Es256Signer,
    Sm2Signer,
    encode_yk2,
    parse_certificate,
    raw_public_key,
)
from gateway.codec.sm2 import Sm2PrivateKey

__all__ = ["Phone", "PhoneError"]

POP_CONTEXT = "cq-gateway device enrolment v1"


class PhoneError(RuntimeError):
    """The gateway refused the phone (status and problem code in the message)."""


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Phone:
    """One phone: its device key, its certificate and its counter."""

    signer: Ed25519Signer | Es256Signer | Sm2Signer
    private: bytes  # the seed / scalar: stays on the phone (here: in the state file)
    certificate: bytes | None = None
    device_id: str | None = None
    not_before: int = 0
    not_after: int = 0
    renew_after: int = 0
    counter: int = 0
    #: gateway time − phone time, learned at enrolment when the phone's clock is off (> 2 s)
    clock_offset_s: int = 0
    state_path: Path | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)

    # ---------------------------------------------------------------- the key
    @classmethod
    def new(cls, alg: str = "EdDSA", state_path: Path | None = None,
            clock: Callable[[], float] = time.time) -> Phone:
        """A fresh device key generated on the phone."""
        private = os.urandom(32)
        if alg == "EdDSA":
            signer: Ed25519Signer | Es256Signer | Sm2Signer = Ed25519Signer.from_seed(private)
        elif alg == "ES256":
            from cryptography.hazmat.primitives.asymmetric import ec

            key = ec.generate_private_key(ec.SECP256R1())
            private = key.private_numbers().private_value.to_bytes(32, "big")
            signer = Es256Signer(key)
        elif alg == "SM2":  # 国密 (docs/code-format.md §10.1, id 3)
            sm2 = Sm2PrivateKey.generate()
            private = sm2.scalar
            signer = Sm2Signer(sm2)
        else:
            raise ValueError("the reference phone makes EdDSA, ES256 or SM2 device keys")
        return cls(signer=signer, private=private, state_path=state_path, clock=clock)

    @property
    def alg(self) -> str:
        return self.signer.alg

    @property
    def public_key(self) -> str:
        """base64url of the raw public key (Ed25519 32 bytes, P-256/SM2 uncompressed 65 bytes)."""
        return _b64u(raw_public_key(self.signer.public_key()))

    def proof(self, challenge: str) -> str:
        message = f"{POP_CONTEXT}\n{challenge}\n{self.public_key}".encode("ascii")
        return _b64u(self.signer.sign(message))

    # ---------------------------------------------------------------- enrolment (network)
    async def enrol(self, http: Any, resident_token: str, base: str = "") -> dict[str, Any]:
        """Enrol (or renew: the same calls with the same key). ``http`` is an
        ``aiohttp.ClientSession`` (``base`` = the gateway URL) or aiohttp's test client."""
        auth = {"Authorization": f"Bearer {resident_token}"}
        async with http.post(f"{base}/v1/devices/challenge", headers=auth) as r:
            body = await r.json()
            if r.status != 201:
                raise PhoneError(f"challenge: {r.status} {body.get('code')}")
        request = self.enrolment_body(body["challenge"])
        async with http.post(f"{base}/v1/devices", json=request, headers=auth) as r:
            body = await r.json()
            if r.status not in (200, 201):
                raise PhoneError(f"enrol: {r.status} {body.get('code')}: {body.get('detail')}")
        self.accept(body)
        return dict(body)

    renew = enrol

    def enrolment_body(self, challenge: str) -> dict[str, str]:
        """The body of POST /v1/devices for a challenge (for callers with their own HTTP)."""
        return {"alg": self.alg, "public_key": self.public_key, "challenge": challenge,
                "proof": self.proof(challenge)}

    def accept(self, answer: dict[str, Any]) -> None:
        """Keep the certificate the gateway answered (after checking it is for this key)."""
        cert = _unb64u(answer["certificate"])
        parsed = parse_certificate(cert)
        from gateway.codec import normalise_device_key

        mine = normalise_device_key(self.alg, raw_public_key(self.signer.public_key()))
        if parsed.device_key != mine:
            raise PhoneError("the certificate is for another key")
        # not_before is the gateway's clock at enrolment: a phone whose own clock is off by
        # more than a couple of seconds keeps the difference (docs/devices.md "Clock rules")
        skew = parsed.not_before - int(self.clock())
        self.clock_offset_s = skew if abs(skew) > 2 else 0
        self.certificate = cert
        self.device_id = answer["device_id"]
        self.not_before, self.not_after = parsed.not_before, parsed.not_after
        self.renew_after = int(answer.get("renew_after", parsed.not_before
                                          + (parsed.not_after - parsed.not_before) // 2))
        self.save()

    def now(self) -> int:
        """The phone's clock corrected by what enrolment taught it."""
        return int(self.clock()) + self.clock_offset_s

    def needs_renewal(self, now: float | None = None) -> bool:
        t = self.now() if now is None else now
        return self.certificate is None or t >= self.renew_after

    # ---------------------------------------------------------------- codes (no network)
    def make_code(self, now: float | None = None, lifetime_s: int = 30) -> str:
        """A fresh ``YK2:`` code, offline. The counter is saved before the code exists."""
        if self.certificate is None:
            raise PhoneError("not enrolled")
        t = self.now() if now is None else int(now)
        if t > self.not_after:
            raise PhoneError("the device certificate has expired: renew when online")
        self.counter += 1
        self.save()
        return encode_yk2(certificate=self.certificate, issued_at=t, lifetime_s=lifetime_s,
                          counter=self.counter, signer=self.signer)

    # ---------------------------------------------------------------- state
    def to_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "TEST_ONLY_private_key_hex": self.private.hex(),
                "certificate": _b64u(self.certificate) if self.certificate else None,
                "device_id": self.device_id, "renew_after": self.renew_after,
                "counter": self.counter, "clock_offset_s": self.clock_offset_s}

    def save(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)  # atomic: a crash leaves the old or the new state

    @classmethod
    def load(cls, path: Path, clock: Callable[[], float] = time.time) -> Phone:
        doc = json.loads(path.read_text("utf-8"))
        private = bytes.fromhex(doc["TEST_ONLY_private_key_hex"])
        signer: Ed25519Signer | Es256Signer | Sm2Signer = (
            Ed25519Signer.from_seed(private) if doc["alg"] == "EdDSA"
            else Sm2Signer.from_scalar(private) if doc["alg"] == "SM2"
            else Es256Signer.from_scalar(private))
        phone = cls(signer=signer, private=private, state_path=path, clock=clock,
                    counter=int(doc["counter"]),
                    clock_offset_s=int(doc.get("clock_offset_s", 0)))
        if doc.get("certificate"):
            cert = _unb64u(doc["certificate"])
            parsed = parse_certificate(cert)
            phone.certificate, phone.device_id = cert, doc["device_id"]
            phone.not_before, phone.not_after = parsed.not_before, parsed.not_after
            phone.renew_after = int(doc["renew_after"])
        return phone


async def sandbox_resident_token(http: Any, base: str, resident: str = "r-zhang-wei",
                                 app: str = "app-ykb") -> str:
    """A sandbox resident token, as a resident app gets one (upstream assertion → RFC 8693)."""
    async with http.get(f"{base}/sandbox/v1/demo") as r:
        demo = await r.json()
    secret = next(c["client_secret"] for c in demo["clients"] if c["client_id"] == app)
    async with http.post(f"{base}/sandbox/v1/upstream-assertions",
                         json={"resident": resident, "platform": "ykb"}) as r:
        assertion = (await r.json())["assertion"]
    basic = base64.b64encode(f"{app}:{secret}".encode()).decode()
    async with http.post(f"{base}/oauth2/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": assertion,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
            headers={"Authorization": f"Basic {basic}"}) as r:
        return str((await r.json())["access_token"])


async def _online(args: argparse.Namespace) -> None:
    import aiohttp

    path = Path(args.state)
    phone = Phone.load(path) if path.exists() else Phone.new(args.alg, path)
    async with aiohttp.ClientSession() as http:
        token = args.token or await sandbox_resident_token(http, args.base, args.resident)
        answer = await phone.enrol(http, token, args.base)
    print(json.dumps({k: answer[k] for k in ("device_id", "serial", "not_after",
                                             "renew_after", "renewed")}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.phone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("enrol", "renew", "code"))
    p.add_argument("--state", default="phone.json", help="the phone's state file (0600)")
    p.add_argument("--base", default="http://127.0.0.1:8080")
    p.add_argument("--alg", default="EdDSA", choices=("EdDSA", "ES256"))
    p.add_argument("--resident", default="r-zhang-wei", help="sandbox demo resident")
    p.add_argument("--token", help="a resident access token (else the sandbox's)")
    p.add_argument("--lifetime", type=int, default=30)
    args = p.parse_args(argv)
    if args.command == "code":
        print(Phone.load(Path(args.state)).make_code(lifetime_s=args.lifetime))
        return 0
    if args.command == "renew" and not Path(args.state).exists():
        print("no phone state: enrol first", file=sys.stderr)
        return 2
    asyncio.run(_online(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
