"""Key rings on disk: ``<keys_dir>/<purpose>/ring.json`` plus one PKCS#8 PEM per key.

Private key files are written 0600 (atomically: temp file + rename) and refused when group-
or world-readable. The ring file holds only public metadata (kid, alg, state, times).
Several worker processes read the same files; a ring changes only through
`gateway keys rotate` (or the first sandbox run), under an exclusive lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.authz.datakeys import DataKeys
from gateway.authz.keyring import Alg, KeyRing, PrivateKey, SigningKey, bootstrap, rotate
from gateway.codec.sm2 import Sm2PrivateKey


class KeyFileError(RuntimeError):
    """A key file is missing, unreadable or too widely readable (message names no secret)."""


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_private_pem(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"private key file {path} is missing") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"private key file {path} must have 0600 permissions")
    return path.read_bytes()


def _load_private(pem: bytes, alg: str) -> PrivateKey:
    # cryptography cannot parse SM2 (sm2p256v1) keys; the codec's SM2 module can.
    if alg == "SM2":
        return Sm2PrivateKey.from_pem(pem)
    return serialization.load_pem_private_key(pem, password=None)  # type: ignore[return-value]


def _private_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM; SM2 keys too (``openssl pkey -in KID.pem`` reads them)."""
    if isinstance(key, Sm2PrivateKey):
        return key.to_pem()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class KeyRingFiles:
    def __init__(self, keys_dir: Path, purpose: str) -> None:
        self.dir = keys_dir / purpose
        self.purpose = purpose
        self._ring_file = self.dir / "ring.json"

    def exists(self) -> bool:
        return self._ring_file.exists()

    def mtime_ns(self) -> int:
        try:
            return self._ring_file.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def load(self) -> KeyRing:
        try:
            meta = json.loads(self._ring_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise KeyFileError(f"no key ring at {self._ring_file}; run `gateway keys generate`") \
                from None
        keys = []
        for m in meta["keys"]:
            pem = read_private_pem(self.dir / f"{m['kid']}.pem")
            keys.append(SigningKey(
                kid=m["kid"], alg=m["alg"], state=m["state"], created_at=m["created_at"],
                private_key=_load_private(pem, m["alg"]),
                activated_at=m.get("activated_at"), retired_at=m.get("retired_at"),
                verify_until=m.get("verify_until")))
        return KeyRing(self.purpose, tuple(keys))

    def save(self, ring: KeyRing) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta: list[dict[str, Any]] = []
        for k in ring.keys:
            pem_path = self.dir / f"{k.kid}.pem"
            if not pem_path.exists():
                write_private(pem_path, _private_pem(k.private_key))
            meta.append({"kid": k.kid, "alg": k.alg, "state": k.state,
                         "created_at": k.created_at, "activated_at": k.activated_at,
                         "retired_at": k.retired_at, "verify_until": k.verify_until})
        _write_public(self._ring_file, json.dumps({"purpose": self.purpose, "keys": meta},
                                                  indent=2))
        if self.purpose == "trust":
            self._save_endorsements(ring)
        live = {k.kid for k in ring.keys}
        for pem in self.dir.glob("*.pem"):
            if pem.stem not in live:
                pem.unlink()

    # -- the trust-list ring only: endorsements outlive the keys that made them
    @property
    def _chain_file(self) -> Path:
        return self.dir / "endorsements.json"

    def endorsements(self) -> list[str]:
        """Every endorsement ever made in this ring (old key signs new, docs/offline.md §2),
        oldest first; public data."""
        try:
            return list(json.loads(self._chain_file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return []

    def _save_endorsements(self, ring: KeyRing) -> None:
        from gateway.services.trustlist import ring_endorsements

        chain = list(dict.fromkeys([*self.endorsements(), *ring_endorsements(ring)]))
        _write_public(self._chain_file, json.dumps(chain, indent=1))

    def ensure(self, alg: Alg, now: float) -> KeyRing:
        """Load the ring, generating a fresh one on first run."""
        with self._locked():
            if not self.exists():
                self.save(bootstrap(self.purpose, alg, now))
            return self.load()

    def rotate(self, now: float, max_lifetime_s: float, alg: Alg | None = None) -> KeyRing:
        with self._locked():
            ring = rotate(self.load(), now, max_lifetime_s, alg)
            self.save(ring)
            return ring

    def ensure_current_alg(self, alg: Alg, now: float, max_lifetime_s: float) -> KeyRing:
        """Sandbox only: make ``alg`` the signing algorithm (two rotations: the new key is
        published, then signs; the old keeps verifying for ``max_lifetime_s``). Checked and
        done under the ring's lock, so workers starting together rotate once between them."""
        with self._locked():
            ring = self.load()
            if ring.current().alg != alg:
                ring = rotate(rotate(ring, now, max_lifetime_s, alg), now, max_lifetime_s, alg)
                self.save(ring)
            return ring


def load_data_master_key(keys_dir: Path, *, create: bool, env_value: str | None = None) -> bytes:
    """The 256-bit master secret for personal-data keys (gateway.authz.datakeys).

    From GATEWAY_DATA_KEY (base64, 32 bytes) when given; else `<keys_dir>/data/master.key`
    (0600), created on first run only when `create` (the sandbox)."""
    import base64
    import secrets

    if env_value:
        try:
            key = base64.b64decode(env_value, validate=True)
        except ValueError:
            raise KeyFileError("GATEWAY_DATA_KEY is not valid base64") from None
        if len(key) != 32:
            raise KeyFileError("GATEWAY_DATA_KEY must decode to 32 bytes")
        return key
    path = keys_dir / "data" / "master.key"
    if not path.exists():
        if not create:
            raise KeyFileError(f"no data master key at {path} and GATEWAY_DATA_KEY is not set")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_private_pem(path)  # another worker won the race
        try:
            os.write(fd, secrets.token_bytes(32))
        finally:
            os.close(fd)
    key = read_private_pem(path)
    if len(key) != 32:
        raise KeyFileError(f"{path} must hold exactly 32 bytes")
    return key


def _subject_suite_path(keys_dir: Path) -> Path:
    return keys_dir / "data" / "subjects.suite"


def record_subject_suite(keys_dir: Path, suite: str) -> None:
    """Pin the pairwise-subject derivation of a new deployment (written once, never changed:
    subjects are identifiers relying parties keep, docs/crypto-suites.md "Subjects")."""
    path = _subject_suite_path(keys_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, suite.encode("ascii"))
    finally:
        os.close(fd)


def subject_suite(keys_dir: Path) -> str:
    """The suite pairwise subjects are derived in: the one recorded when the deployment's data
    key was created; ``intl`` for deployments that predate crypto suites."""
    try:
        text = _subject_suite_path(keys_dir).read_text("ascii").strip()
    except FileNotFoundError:
        return "intl"
    if text not in ("intl", "gm"):
        raise KeyFileError(f"{_subject_suite_path(keys_dir)} must say intl or gm")
    return text


def load_data_keys(keys_dir: Path, suite: str, *, create: bool,
                   env_value: str | None = None) -> DataKeys:
    """DataKeys for GATEWAY_CRYPTO_SUITE ``suite``; a data key created here (a new sandbox)
    also pins the subject suite to ``suite``."""
    fresh = create and not env_value and not (keys_dir / "data" / "master.key").exists()
    master = load_data_master_key(keys_dir, create=create, env_value=env_value)
    if fresh:
        record_subject_suite(keys_dir, suite)
    return DataKeys(master, suite, subject_suite=subject_suite(keys_dir))  # type: ignore[arg-type]
