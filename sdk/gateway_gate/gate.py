"""An offline-capable gate (docs/offline.md): its state directory, sync, offline verification
of codes and card taps, the scan journal and its upload.

State directory (0700; files 0600)::

    gate.json          gateway URL, gate client id and secret, scene (written by provision)
    anchor.jwk         the pinned trust-list key (provisioned out of band; advanced only
                       along endorsements)
    trust-list.json    the last trust list accepted (re-verified at every start), and its
                       ETag (trust-list.etag) for If-None-Match
    deny-list.json     the card deny-list held (full list merged with the deltas after it)
    device-deny-list.json  the device deny-list held (YK2: codes; devices.py)
    replay.log         the replay cache's entries (live ones are read back at start)
    journal.log        every scan, append-only (journal.py)
    upload.cursor      how far the journal has been uploaded (byte offset)
    uploads.log        the gateway's answer for every uploaded scan
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.codec import CodeError, verify_code
from gateway.codec.jws import JwsKey
from gateway.codec.registry import MAX_CODE_LEN, trim_scan
from gateway.codec.sm2 import Sm2Unavailable

from .client import GatewayClient
from .devices import DeviceDenyList, parse_device_deny_list
from .documents import DenyList, TrustList, parse_deny_list, parse_trust_list
from .errors import GateError
from .journal import Journal, encode_string, frame
from .replay import ReplayCache

__all__ = ["Gate", "ScanResult", "SyncReport", "UploadReport"]

#: The most scans one upload request carries (the contract allows 1,000).
UPLOAD_BATCH: int = 500


_SECOND: list[Any] = [None, ""]  # [whole second, its "YYYY-MM-DDTHH:MM:SS"]


def rfc3339(t: float) -> str:
    """UTC with milliseconds (RFC 3339 §5.6); the date part formatted once per second."""
    sec = int(t // 1)
    if _SECOND[0] != sec:
        _SECOND[1] = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND[0] = sec
    return f"{_SECOND[1]}.{min(999, int((t - sec) * 1000)):03d}Z"


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory: the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class ScanResult:
    request_id: str
    decision: str  # allow | deny
    reason: str    # the contract's reason codes
    face: str | None
    scanned_at: str

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "decision": self.decision, "reason": self.reason,
                "face": self.face, "scanned_at": self.scanned_at}


@dataclass(frozen=True)
class SyncReport:
    trust_list_version: int
    trust_list_changed: bool
    deny_list_version: int
    deny_list_entries: int
    anchor_kid: str
    device_list_version: int = 0
    device_list_entries: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass(frozen=True)
class UploadReport:
    uploaded: int
    remaining: int
    results: tuple[dict[str, Any], ...]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[str(r.get("status"))] = out.get(str(r.get("status")), 0) + 1
        return out


class Gate:
    """One gate's offline state. Not thread-safe: one scanner loop per gate."""

    def __init__(self, state_dir: Path | str, *, clock: Callable[[], float] = time.time,
                 client: GatewayClient | None = None, durable: bool = True) -> None:
        self.dir = Path(state_dir)
        self._clock = clock
        config_file = self.dir / "gate.json"
        if not config_file.exists() or not (self.dir / "anchor.jwk").exists():
            raise GateError("not_provisioned", f"no gate is provisioned in {self.dir} "
                                               f"(run `gateway-gate provision`)")
        self.config: dict[str, Any] = json.loads(config_file.read_text("utf-8"))
        self.scene: str = self.config["scene"]
        self.client = client or GatewayClient(self.config["base_url"], self.config["client_id"],
                                              self.config["client_secret"], clock=clock)
        self.anchor = JwsKey.from_jwk(json.loads((self.dir / "anchor.jwk").read_text("utf-8")))
        self.trust: TrustList | None = None
        self.deny: DenyList | None = None
        self._deny_etag: str | None = None
        self.devices: DeviceDenyList | None = None
        self._devices_etag: str | None = None
        self._load_documents()
        now = clock()
        self.replay = ReplayCache(self.dir / "replay.log", now, sync=durable)
        self.journal = Journal(self.dir / "journal.log", sync=durable)
        self.uploads = Journal(self.dir / "uploads.log", sync=durable)
        # request ids: unique per gate (the gateway keys them by gate), no syscall per scan
        self._rid_prefix = os.urandom(8).hex()
        self._rid_seq = 0

    def _request_id(self) -> str:
        self._rid_seq += 1
        return f"{self._rid_prefix}{self._rid_seq:08x}"

    # ------------------------------------------------------------------ provisioning
    @classmethod
    def provision(cls, state_dir: Path | str, *, base_url: str, client_id: str,
                  client_secret: str, scene: str, anchor_jwk: dict[str, Any]) -> None:
        """Set a gate up: its credentials and the trust-list key it pins, carried to it out
        of band (docs/offline.md §2). Re-provisioning replaces the pin."""
        key = JwsKey.from_jwk(anchor_jwk)  # refuses anything but a public key with its kid
        d = Path(state_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(d / "gate.json", json.dumps({
            "base_url": base_url.rstrip("/"), "client_id": client_id,
            "client_secret": client_secret, "scene": scene}, indent=1).encode())
        _write_atomic(d / "anchor.jwk", json.dumps(key.to_jwk(), sort_keys=True).encode())
        for stale in ("trust-list.json", "deny-list.json", "device-deny-list.json"):
            (d / stale).unlink(missing_ok=True)

    def _load_documents(self) -> None:
        tl_file, dl_file = self.dir / "trust-list.json", self.dir / "deny-list.json"
        if tl_file.exists():
            try:  # re-verified: a file changed on disk is not believed
                self.trust, signer = parse_trust_list(tl_file.read_bytes(), self.anchor)
            except GateError:
                self.trust = None
            else:
                self._pin(signer)
        if dl_file.exists():
            try:
                held = json.loads(dl_file.read_text("utf-8"))
                self.deny = DenyList.from_json(held["list"])
                self._deny_etag = held.get("etag")
            except (ValueError, KeyError, TypeError, GateError):
                self.deny = None
        dev_file = self.dir / "device-deny-list.json"
        if dev_file.exists():
            try:
                held = json.loads(dev_file.read_text("utf-8"))
                self.devices = DeviceDenyList.from_json(held["list"])
                self._devices_etag = held.get("etag")
            except (ValueError, KeyError, TypeError, AttributeError, GateError):
                self.devices = None

    def _pin(self, signer: JwsKey) -> None:
        if signer.kid != self.anchor.kid:
            _write_atomic(self.dir / "anchor.jwk",
                          json.dumps(signer.to_jwk(), sort_keys=True).encode())
            self.anchor = signer

    # ------------------------------------------------------------------ sync
    def sync(self) -> SyncReport:
        """Fetch the trust list and the deny-list (delta when possible), verify both against
        the pinned key, keep them. Raises Offline when the gateway cannot be reached."""
        changed = False
        etag_file = self.dir / "trust-list.etag"
        etag = etag_file.read_text("utf-8") if etag_file.exists() and self.trust else None
        r = self.client.trust_list(etag)
        if r.status == 304 and self.trust is not None:
            return self._sync_lists(False)
        tl, signer = parse_trust_list(r.body, self.anchor)
        held = self.trust
        if held is not None and (tl.version < held.version or (
                tl.version == held.version and tl.issued_at < held.issued_at)):
            raise GateError("rollback", "the trust list is older than the one this gate holds")
        if held is None or tl.raw != held.raw:
            _write_atomic(self.dir / "trust-list.json", tl.raw)
            changed = True
            self.trust = tl
        self._pin(signer)
        new_etag = {k.lower(): v for k, v in r.headers.items()}.get("etag")
        if new_etag:
            _write_atomic(etag_file, new_etag.encode())
        return self._sync_lists(changed)

    def _sync_lists(self, trust_list_changed: bool) -> SyncReport:
        """The card deny-list and the device deny-list, whatever the trust list did."""
        self._sync_deny_list()
        self._sync_device_list()
        assert self.trust is not None and self.deny is not None and self.devices is not None
        return SyncReport(self.trust.version, trust_list_changed, self.deny.version,
                          len(self.deny.entries), self.anchor.kid, self.devices.version,
                          len(self.devices.entries))

    def _sync_device_list(self) -> None:
        """The device deny-list, as the card one: a delta from the version held, else full."""
        held = self.devices
        since = held.version if held is not None else None
        r = self.client.device_list(since, self._devices_etag if held is not None else None)
        if r.status == 304:
            return
        try:
            new = parse_device_deny_list(r.body, self.anchor, held)
        except GateError as exc:
            if exc.code != "document_invalid" or held is None:
                raise
            r = self.client.device_list(None)
            new = parse_device_deny_list(r.body, self.anchor, held)
        if self.trust is not None:
            new.prune(self._clock(), self.trust.code_max_skew_s)
        etag = {k.lower(): v for k, v in r.headers.items()}.get("etag")
        _write_atomic(self.dir / "device-deny-list.json",
                      json.dumps({"list": new.to_json(), "etag": etag}).encode())
        self.devices, self._devices_etag = new, etag

    def _sync_deny_list(self) -> None:
        held = self.deny
        since = held.version if held is not None else None
        r = self.client.deny_list(since, self._deny_etag if held is not None else None)
        if r.status == 304:
            return
        try:
            new = parse_deny_list(r.body, self.anchor, held)
        except GateError as exc:
            if exc.code != "document_invalid" or held is None:
                raise
            r = self.client.deny_list(None)  # a delta that does not fit: the full list
            new = parse_deny_list(r.body, self.anchor, held)
        etag = {k.lower(): v for k, v in r.headers.items()}.get("etag")
        _write_atomic(self.dir / "deny-list.json",
                      json.dumps({"list": new.to_json(), "etag": etag}).encode())
        self.deny, self._deny_etag = new, etag

    # ------------------------------------------------------------------ offline checks
    def _fresh_trust(self, now: float) -> TrustList:
        tl = self.trust
        if tl is None:
            raise GateError("no_trust_list", "this gate holds no trust list: sync first")
        if now > tl.expires_at:
            raise GateError("trust_list_expired",
                            f"the trust list expired at {rfc3339(tl.expires_at)}: this gate "
                            f"refuses to verify until it syncs")
        return tl

    def _fresh_devices(self, now: float) -> DeviceDenyList:
        dl = self.devices
        if dl is None:
            raise GateError("no_device_list", "this gate holds no device deny-list: sync "
                                              "first (YK2: codes are refused until then)")
        if now > dl.expires_at:
            raise GateError("device_list_expired",
                            f"the device deny-list expired at {rfc3339(dl.expires_at)}: this "
                            f"gate refuses YK2: codes until it syncs")
        return dl

    def verify_code(self, code: str, *, now: float | None = None) -> ScanResult:
        """Verify a scanned code offline (docs/code-format.md §6), the scene's policy from the
        trust list, the replay cache; journal the scan. Fails closed (GateError, nothing
        journaled) when the trust list is missing or past its max age."""
        t = self._clock() if now is None else now
        tl = self._fresh_trust(t)
        scene = tl.scenes.get(self.scene)
        if scene is None:
            raise GateError("unknown_scene", f"the trust list has no scene {self.scene!r}")
        code = trim_scan(code) if isinstance(code, str) else ""
        face: str | None = None
        try:
            claims = verify_code(code, tl.lookup, t, tl.code_max_skew_s)
        except CodeError as exc:
            reason: str = exc.reason
        except Sm2Unavailable:
            raise GateError("unsupported_algorithm", "an SM2 code, and this machine has no "
                                                     "OpenSSL 3 libcrypto to verify it") from None
        else:
            face = claims.face
            key = ReplayCache.key(claims.issuer, claims.kid, claims.nonce)
            if not scene.permits(claims.face, claims.region):
                reason = "scene_not_permitted"
            elif claims.device is not None and self._fresh_devices(t).is_revoked(
                    claims.device.serial):
                reason = "revoked"  # a removed phone, a suspended resident (docs/devices.md)
            elif self.replay.seen(key, t):
                reason = "replayed"
            else:
                # durable before the gate opens: a reboot cannot let it through again
                self.replay.add(key, claims.issued_at + claims.lifetime_s + tl.code_max_skew_s,
                                t)
                reason = "ok"
        result = ScanResult(self._request_id(), "allow" if reason == "ok" else "deny",
                            reason, face, rfc3339(t))
        self.journal.append_line(_code_line(code[:MAX_CODE_LEN], result))
        return result

    def tap(self, card_no: str, region: str, terminal_mac: str, *,
            request_id: str | None = None, now: float | None = None,
            scanned_at: str | None = None) -> ScanResult:
        """A physical-card tap judged offline: the scene's policy and the deny-list (the
        terminal's PSAM attestation is checked by the gateway on upload). ``request_id`` and
        ``scanned_at`` are those the PSAM signed over, when it has already signed."""
        t = self._clock() if now is None else now
        tl = self._fresh_trust(t)
        dl = self.deny
        if dl is None:
            raise GateError("no_deny_list", "this gate holds no card deny-list: sync first")
        if t > dl.expires_at:
            raise GateError("deny_list_expired",
                            f"the card deny-list expired at {rfc3339(dl.expires_at)}: this "
                            f"gate refuses card taps until it syncs")
        scene = tl.scenes.get(self.scene)
        if scene is None:
            raise GateError("unknown_scene", f"the trust list has no scene {self.scene!r}")
        if not (isinstance(card_no, str) and len(card_no) == 11 and card_no.isascii()
                and card_no[:2] == region):
            reason = "malformed"
        elif not scene.permits("ssc_card", region):
            reason = "scene_not_permitted"
        elif dl.is_denied(region, card_no):
            reason = "revoked"
        else:
            reason = "ok"
        result = ScanResult(request_id or self._request_id(), "allow" if reason == "ok" else "deny",
                            reason, "ssc_card", scanned_at or rfc3339(t))
        self.journal.append({"kind": "card", "card": {"card_no": str(card_no)[:64],
                                                      "region": str(region)[:16],
                                                      "terminal_mac": str(terminal_mac)[:256]},
                             **result.to_json()})
        return result

    # ------------------------------------------------------------------ upload
    def _cursor(self) -> int:
        try:
            return int(json.loads((self.dir / "upload.cursor").read_text("utf-8"))["offset"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    def pending(self) -> int:
        return sum(1 for _ in self.journal.records(self._cursor()))

    def upload(self, *, batch: int = UPLOAD_BATCH,
               max_batches: int | None = None) -> UploadReport:
        """Send the journal from where the last upload stopped, in batches; each batch's
        answers are kept (uploads.log) before the cursor moves past it, so an interrupted
        upload resumes with the first unconfirmed batch (the gateway is idempotent per
        (gate, request_id), so a batch sent twice changes nothing)."""
        if not 1 <= batch <= 1000:
            raise ValueError("a batch holds 1 to 1,000 scans")
        done: list[dict[str, Any]] = []
        sent = 0
        batches = 0
        cursor = self._cursor()
        while max_batches is None or batches < max_batches:
            chunk: list[dict[str, Any]] = []
            end = cursor
            for offset, record in self.journal.records(cursor):
                chunk.append(_scan(record))
                end = offset
                if len(chunk) >= batch:
                    break
            if not chunk:
                break
            results = self.client.upload(chunk)  # Offline / GateError: stop, resume later
            for r in results:
                self.uploads.append(r if isinstance(r, dict) else {"result": r})
            _write_atomic(self.dir / "upload.cursor", json.dumps({"offset": end}).encode())
            cursor = end
            done.extend(r for r in results if isinstance(r, dict))
            sent += len(chunk)
            batches += 1
        return UploadReport(sent, self.pending(), tuple(done))

    # ------------------------------------------------------------------ status
    def status(self, now: float | None = None) -> dict[str, Any]:
        t = self._clock() if now is None else now
        tl, dl = self.trust, self.deny
        return {
            "scene": self.scene, "anchor_kid": self.anchor.kid,
            "trust_list": None if tl is None else {
                "version": tl.version, "issued_at": rfc3339(tl.issued_at),
                "next_update": rfc3339(tl.next_update), "expires_at": rfc3339(tl.expires_at),
                "usable": t <= tl.expires_at, "keys": len(tl.keys)},
            "deny_list": None if dl is None else {
                "version": dl.version, "entries": len(dl.entries),
                "expires_at": rfc3339(dl.expires_at), "usable": t <= dl.expires_at},
            "device_deny_list": None if self.devices is None else {
                "version": self.devices.version, "entries": len(self.devices.entries),
                "expires_at": rfc3339(self.devices.expires_at),
                "usable": t <= self.devices.expires_at},
            "replay_cache": len(self.replay), "pending_upload": self.pending(),
            "journal_damaged_lines": self.journal.damaged}

    def close(self) -> None:
        self.replay.close()
        self.journal.close()
        self.uploads.close()


def _code_line(code: str, r: ScanResult) -> bytes:
    """The journal line of a code scan: the bytes of ``encode_record({"kind": "code", "code":
    code, **r.to_json()})`` (tests/offline/test_journal.py holds them equal), written without
    the dict and the encoder's walk over it (≈ 3 µs of a scan's ≈ 17 µs beside the codec)."""
    data = (f'{{"kind":"code","code":{encode_string(code)},"request_id":'
            f'{encode_string(r.request_id)},"decision":{encode_string(r.decision)},"reason":'
            f'{encode_string(r.reason)},"face":'
            f'{"null" if r.face is None else encode_string(r.face)},"scanned_at":'
            f'{encode_string(r.scanned_at)}}}').encode()
    return frame(data)


def _scan(record: dict[str, Any]) -> dict[str, Any]:
    """A journal record as the contract's upload item."""
    item: dict[str, Any] = {"request_id": record["request_id"],
                            "scanned_at": record["scanned_at"],
                            "local_decision": record["decision"]}
    if record.get("kind") == "card":
        item["card"] = record["card"]
    else:
        item["code"] = record.get("code", "")
    return item

