"""Personal data at rest under both suites: HMAC-SM3 and SM4-GCM (gm), the intl forms
unchanged, each form readable whatever the configured suite, subjects pinned, and the
`gateway identity reseal` command against a real Redis."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.adapters.keyfiles import load_data_keys, subject_suite
from gateway.adapters.redis_identity import RedisIdentityStore
from gateway.adapters.redis_store import connect
from gateway.authz.datakeys import GM_PREFIX, DataKeys, SealError, _Sm4Gcm, derive, derive_gm
from gateway.clock import SystemClock
from gateway.services.identity import CredentialInput, IdentityService
from gateway.services.upstream import UpstreamIdentity
from tests.deny_lists import memory_deny_list

MASTER = bytes(range(32))
CID = "500106195803129997"


def test_sm4_gcm_rfc8998_vector() -> None:
    """RFC 8998 A.1 (SM4-GCM, GB/T 32907 in GCM): the cipher the gm suite seals with."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    pt = bytes.fromhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
                       "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA")
    out = _Sm4Gcm(key).encrypt(nonce, pt, aad)
    assert out.hex() == (
        "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735"
        "d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d"
        "83de3541e4c2b58177e065a9bf7b62ec")
    assert _Sm4Gcm(key).decrypt(nonce, out, aad) == pt


def test_hmac_sm3_agrees_with_openssl(tmp_path: Path) -> None:
    keys = DataKeys(MASTER, "gm")
    key = derive_gm(MASTER, "trust-root-hash")
    (tmp_path / "d").write_bytes(CID.encode())
    r = subprocess.run(["openssl", "dgst", "-sm3", "-mac", "HMAC", "-macopt",
                        "hexkey:" + key.hex(), "-r", str(tmp_path / "d")],
                       capture_output=True, check=True, timeout=30)
    assert keys.trust_root_hash(CID) == GM_PREFIX + r.stdout.split()[0].decode()


def test_intl_forms_are_the_ones_written_before_suites() -> None:
    keys = DataKeys(MASTER)  # default: intl
    trh = keys.trust_root_hash(CID)
    assert len(trh) == 64 and int(trh, 16) >= 0
    sealed = keys.seal_trust_root(CID, "p1")
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    aead = AESGCM(derive(MASTER, "trust-root-seal"))
    assert aead.decrypt(raw[:12], raw[12:], b"p1").decode() == CID


def test_each_form_opens_under_either_configured_suite() -> None:
    intl, gm = DataKeys(MASTER, "intl"), DataKeys(MASTER, "gm")
    a, b = intl.seal_trust_root(CID, "p1"), gm.seal_trust_root(CID, "p1")
    assert not a.startswith(GM_PREFIX) and b.startswith(GM_PREFIX)
    for k in (intl, gm):
        assert k.open_trust_root(a, "p1") == k.open_trust_root(b, "p1") == CID
        with pytest.raises(SealError):
            k.open_trust_root(b, "p2")  # bound to the person id
        with pytest.raises(SealError):
            k.open_trust_root(b[:-2] + ("A" if b[-2] != "A" else "B") + b[-1], "p1")
    t = gm.seal_person_id("p1", "client")
    assert intl.open_person_id(t, "client") == "p1"
    assert gm.trust_root_hashes(CID) == (gm.trust_root_hash(CID), intl.trust_root_hash(CID))
    assert gm.credential_ref_hashes("ssc_card", "CQ", "x")[1] == intl.credential_ref_hash(
        "ssc_card", "CQ", "x")


def test_pairwise_subjects_follow_the_subject_suite_not_the_switch() -> None:
    intl, switched = DataKeys(MASTER, "intl"), DataKeys(MASTER, "gm", subject_suite="intl")
    fresh_gm = DataKeys(MASTER, "gm")
    assert switched.pairwise_subject("s", "p") == intl.pairwise_subject("s", "p")
    assert fresh_gm.pairwise_subject("s", "p") != intl.pairwise_subject("s", "p")
    assert fresh_gm.pairwise_subject("s", "p") == fresh_gm.pairwise_subject("s", "p")
    assert fresh_gm.pairwise_subject("s", "p") != fresh_gm.pairwise_subject("t", "p")


def test_a_new_gm_deployment_pins_gm_subjects_an_old_one_stays_intl(tmp_path: Path) -> None:
    new = load_data_keys(tmp_path / "new", "gm", create=True)
    assert (new.suite, new.subject_suite, subject_suite(tmp_path / "new")) == ("gm", "gm", "gm")
    old = tmp_path / "old"
    load_data_keys(old, "intl", create=True)
    (old / "data" / "subjects.suite").unlink()  # a deployment from before crypto suites
    assert load_data_keys(old, "gm", create=True).subject_suite == "intl"
    assert load_data_keys(tmp_path / "new", "intl", create=True).subject_suite == "gm"


async def test_reseal_command_moves_intl_data_in_redis(redis_url: str, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    prefix = f"reseal-{os.getpid()}:"
    intl_keys = load_data_keys(keys_dir, "intl", create=True)
    redis = connect(redis_url)
    try:
        store = RedisIdentityStore(redis, prefix)
        svc = IdentityService(store, SystemClock(), intl_keys,
                              deny_list=memory_deny_list(SystemClock().now))
        p = await svc.resolve_upstream(UpstreamIdentity(
            "ykb", None, "ykm-1", CID, "张伟", "j", "iss", 0, 1))  # type: ignore[arg-type]
        await svc._link(p, CredentialInput("ssc_card", "CQ", "CQ100000025"))
        env = {**os.environ, "GATEWAY_REDIS_URL": redis_url, "GATEWAY_REDIS_PREFIX": prefix,
               "GATEWAY_KEYS_DIR": str(keys_dir), "GATEWAY_CRYPTO_SUITE": "gm"}

        def reseal(*extra: str) -> dict[str, object]:
            r = subprocess.run([sys.executable, "-m", "gateway", "identity", "reseal", *extra],
                               env=env, capture_output=True, text=True, timeout=120,
                               check=False)
            assert r.returncode == 0, r.stderr[-2000:]
            assert CID not in r.stdout + r.stderr  # nothing personal in the report or logs
            return dict(json.loads(r.stdout.strip().splitlines()[-1]))

        dry = reseal("--dry-run")
        assert (dry["dry_run"], dry["persons_changed"], dry["credentials_rehashed"]) == (
            True, 1, 2)
        got = reseal()
        assert (got["suite"], got["persons"], got["persons_changed"], got["trust_roots_rehashed"],
                got["credentials_resealed"], got["failed"]) == ("gm", 1, 1, 1, 2, 0)
        moved = await store.get(p.person_id)
        assert moved is not None and moved.trust_root_hash.startswith(GM_PREFIX)
        gm = IdentityService(store, SystemClock(), load_data_keys(keys_dir, "gm", create=False),
                             deny_list=memory_deny_list(SystemClock().now))
        assert (await gm.find_by_citizen_id(CID)).person_id == p.person_id  # type: ignore[union-attr]
        assert reseal()["persons_changed"] == 0
    finally:
        await redis.aclose()
