"""Sandbox upstream keys on disk: generated on first run, reused by every process.

Files live under ``<keys_dir>/sandbox-upstreams/``. Private keys are PKCS#8 PEM, mode 0600,
created atomically with ``link(2)`` so concurrent workers racing on first start all end up
with the same key (the loser of the race reads the winner's file). Keys are never logged;
reprs show only the kid.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.codec import VerificationKey, derive_kid
from gateway.codec.sm2 import Sm2PrivateKey

__all__ = ["SandboxKey", "load_or_create_ec_key", "load_or_create_secret",
           "load_or_create_sm2_key", "sandbox_keys_dir"]

#: Published validity window of a sandbox key around its creation time (code-keys ``nbf/exp``).
KEY_NOT_BEFORE_SLACK_S = 7 * 86400
KEY_LIFETIME_S = 400 * 86400


class SandboxKeyError(RuntimeError):
    """A sandbox key file is unreadable or too widely readable (names no secret)."""


def sandbox_keys_dir(keys_dir: Path) -> Path:
    d = Path(keys_dir) / "sandbox-upstreams"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` unless it exists; atomic with respect to other processes."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process won the race: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _read_private(path: Path) -> bytes:
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SandboxKeyError(f"private key file {path.name} must have 0600 permissions")
    return path.read_bytes()


@dataclass(frozen=True)
class SandboxKey:
    """A P-256 (or, for an SM2 region's code key, SM2) key with its kid and publication window."""

    name: str
    private_key: ec.EllipticCurvePrivateKey | Sm2PrivateKey
    kid: str
    created_at: int

    def __repr__(self) -> str:
        return f"SandboxKey(name={self.name!r}, kid={self.kid!r})"

    def public_jwk(self, issuer: str | None = None) -> dict[str, Any]:
        """RFC 7517 public JWK (``kid``, ``alg: ES256`` or ``SM2``, ``use: sig``); with
        ``issuer`` also the trust-list members ``iss``, ``nbf``, ``exp``."""
        vk = VerificationKey.of(issuer or "essc:XX", self.private_key.public_key(), kid=self.kid,
                                not_before=self.created_at - KEY_NOT_BEFORE_SLACK_S,
                                not_after=self.created_at + KEY_LIFETIME_S)
        jwk = vk.to_jwk()
        if issuer is None:
            for k in ("iss", "nbf", "exp"):
                jwk.pop(k, None)
        return jwk

    @classmethod
    def generate(cls, name: str, now: float) -> SandboxKey:
        pk = ec.generate_private_key(ec.SECP256R1())
        return cls(name, pk, derive_kid(pk.public_key()), int(now))


def load_or_create_ec_key(keys_dir: Path, name: str, now: float) -> SandboxKey:
    """The P-256 key ``name`` (``<name>.pem`` + public ``<name>.json``), created if missing."""
    d = sandbox_keys_dir(keys_dir)
    pem_path, meta_path = d / f"{name}.pem", d / f"{name}.json"
    if not pem_path.exists():
        pk = ec.generate_private_key(ec.SECP256R1())
        _create_exclusive(pem_path, pk.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600)
    key = serialization.load_pem_private_key(_read_private(pem_path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SandboxKeyError(f"{pem_path.name} is not an EC key")
    if not meta_path.exists():
        _create_exclusive(meta_path, json.dumps({"created_at": int(now)}).encode(), 0o644)
    created_at = int(json.loads(meta_path.read_text("utf-8"))["created_at"])
    return SandboxKey(name, key, derive_kid(key.public_key()), created_at)


def load_or_create_secret(keys_dir: Path, name: str, length: int = 32) -> bytes:
    """A random secret (e.g. the sandbox PSAM master key), 0600, shared by all workers."""
    path = sandbox_keys_dir(keys_dir) / f"{name}.key"
    if not path.exists():
        _create_exclusive(path, secrets.token_bytes(length), 0o600)
    data = _read_private(path)
    if len(data) != length:
        raise SandboxKeyError(f"{path.name} has the wrong length")
    return data


def load_or_create_sm2_key(keys_dir: Path, name: str, now: float) -> SandboxKey:
    """The SM2 key ``name`` (PKCS#8 ``<name>.pem`` + public ``<name>.json``), created if missing."""
    d = sandbox_keys_dir(keys_dir)
    pem_path, meta_path = d / f"{name}.pem", d / f"{name}.json"
    if not pem_path.exists():
        _create_exclusive(pem_path, Sm2PrivateKey.generate().to_pem(), 0o600)
    try:
        key = Sm2PrivateKey.from_pem(_read_private(pem_path))
    except ValueError:
        raise SandboxKeyError(f"{pem_path.name} is not an SM2 key") from None
    if not meta_path.exists():
        _create_exclusive(meta_path, json.dumps({"created_at": int(now)}).encode(), 0o644)
    created_at = int(json.loads(meta_path.read_text("utf-8"))["created_at"])
    return SandboxKey(name, key, derive_kid(key.public_key()), created_at)
