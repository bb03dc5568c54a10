"""Settings validation, the key ring life cycle and key-file hygiene."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.adapters.keyfiles import KeyFileError, KeyRingFiles, load_data_master_key
from gateway.authz.datakeys import DataKeys, SealError
from gateway.authz.keyring import bootstrap, rotate
from gateway.settings import Settings, SettingsError


def test_defaults_are_the_sandbox() -> None:
    s = Settings.from_env({})
    assert s.env == "sandbox" and s.port == 8080 and s.redis_url is None
    assert s.issuer == "http://127.0.0.1:8080" and s.code_ttl_s <= 60


@pytest.mark.parametrize(("env", "needle"), [
    ({"GATEWAY_ENV": "staging"}, "GATEWAY_ENV"),
    ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT"),
    ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT"),
    ({"GATEWAY_CODE_TTL_S": "120"}, "GATEWAY_CODE_TTL_S"),
    ({"GATEWAY_REDIS_URL": "mysql://x"}, "GATEWAY_REDIS_URL"),
    ({"GATEWAY_ENV": "production"}, "GATEWAY_REDIS_URL"),
    ({"GATEWAY_ENV": "production", "GATEWAY_REDIS_URL": "redis://r"}, "GATEWAY_METRICS_TOKEN"),
    ({"GATEWAY_ENV": "production", "GATEWAY_REDIS_URL": "redis://r",
      "GATEWAY_METRICS_TOKEN": "x" * 40}, "https"),
    ({"GATEWAY_ENV": "production", "GATEWAY_REDIS_URL": "redis://r",
      "GATEWAY_METRICS_TOKEN": "x" * 40, "GATEWAY_ISSUER": "https://gw"}, "GATEWAY_YKB_URL"),
    # review finding 6 (issue 16): production reaches its upstreams over https only
    *[({"GATEWAY_ENV": "production", "GATEWAY_REDIS_URL": "redis://r",
        "GATEWAY_METRICS_TOKEN": "x" * 40, "GATEWAY_ISSUER": "https://gw",
        "GATEWAY_YKB_URL": "https://ykb", "GATEWAY_ESSC_URL": "https://essc",
        "GATEWAY_CERTLIB_URL": "https://certlib", "GATEWAY_PSAM_GATE_KEYS": "/k.json",
        name: "http://plain.example"}, f"{name} must be an https")
       for name in ("GATEWAY_YKB_URL", "GATEWAY_ESSC_URL", "GATEWAY_CERTLIB_URL")],
    ({"GATEWAY_ESSC_REGIONS": "CQ,Sichuan"}, "GATEWAY_ESSC_REGIONS"),
    ({"GATEWAY_DATABASE_URL": "mysql://x"}, "GATEWAY_DATABASE_URL"),
    ({"GATEWAY_OFFLINE_MAX_S": "-1"}, "GATEWAY_OFFLINE_MAX_S"),
    ({"GATEWAY_TRANSACTIONS_OUTBOX_SHARDS": "0"}, "GATEWAY_TRANSACTIONS_OUTBOX_SHARDS"),
    ({"GATEWAY_CERTLIB_URL": "ftp://x"}, "GATEWAY_CERTLIB_URL"),
])
def test_invalid_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        Settings.from_env(env)


def test_rotation_life_cycle() -> None:
    ring = bootstrap("token", "ES256", now=1000.0)
    cur, nxt = ring.current(), next(k for k in ring.keys if k.state == "next")
    assert {k.kid for k in ring.published(1000.0)} == {cur.kid, nxt.kid}
    r2 = rotate(ring, now=2000.0, max_lifetime_s=600)
    assert r2.current().kid == nxt.kid
    retired = r2.verification_key(cur.kid, 2500.0)
    assert retired is not None and retired.state == "retired"
    assert r2.verification_key(cur.kid, 2600.0) is None  # past its last token's expiry
    r3 = rotate(r2, now=3000.0, max_lifetime_s=600)
    assert cur.kid not in {k.kid for k in r3.keys}  # dropped once it verifies nothing


def test_key_files_are_private_and_refused_when_readable(tmp_path: Path) -> None:
    files = KeyRingFiles(tmp_path, "code")
    ring = files.ensure("EdDSA", 1000.0)
    for k in ring.keys:
        mode = stat.S_IMODE((tmp_path / "code" / f"{k.kid}.pem").stat().st_mode)
        assert mode == 0o600
    assert "PRIVATE" not in (tmp_path / "code" / "ring.json").read_text()
    pem = tmp_path / "code" / f"{ring.current().kid}.pem"
    os.chmod(pem, 0o644)
    with pytest.raises(KeyFileError, match="0600"):
        files.load()


def test_production_refuses_missing_keys(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        KeyRingFiles(tmp_path, "token").load()
    with pytest.raises(KeyFileError):
        load_data_master_key(tmp_path, create=False)


def test_data_keys_hash_seal_and_pairwise() -> None:
    keys = DataKeys(b"\x01" * 32)
    other = DataKeys(b"\x02" * 32)
    cid = "50010319800101001x"
    assert keys.trust_root_hash(cid) == keys.trust_root_hash(cid.upper())
    assert keys.trust_root_hash(cid) != other.trust_root_hash(cid)
    sealed = keys.seal_trust_root(cid, "p1")
    assert cid.upper() not in sealed and keys.open_trust_root(sealed, "p1") == cid.upper()
    with pytest.raises(SealError):
        keys.open_trust_root(sealed, "p2")  # bound to its person
    a, b = keys.pairwise_subject("sector-a", "p1"), keys.pairwise_subject("sector-b", "p1")
    assert a != b and a == keys.pairwise_subject("sector-a", "p1")
    t1, t2 = keys.seal_person_id("p1", "app"), keys.seal_person_id("p1", "app")
    assert t1 != t2 and keys.open_person_id(t1, "app") == "p1"
    with pytest.raises(SealError):
        keys.open_person_id(t1, "other-app")
