"""`gateway keys` for the trust-list key: generate, trust-anchor (the JWK a gate pins), rotate
(the old key endorses the new, and the endorsements outlive the keys that made them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.codec.jws import JwsKey
from gateway.codec.offline import follow_endorsements
from tests.foundation.test_cli import base_env, run


@pytest.mark.slow
def test_trust_anchor_and_rotation(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    assert run(["keys", "generate", "--purpose", "trust"], env, tmp_path).returncode == 0
    r = run(["keys", "trust-anchor"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    jwk = json.loads(r.stdout)
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"} and "d" not in jwk
    first = JwsKey.from_jwk(jwk)
    for _ in range(3):  # each retired key verifies 1 s more, then leaves the ring
        r = run(["keys", "rotate", "--purpose", "trust", "--max-lifetime-s", "1"], env,
                tmp_path)
        time.sleep(1.1)
        assert r.returncode == 0, r.stderr
    now = JwsKey.from_jwk(json.loads(run(["keys", "trust-anchor"], env, tmp_path).stdout))
    assert now.kid != first.kid
    ring = json.loads((tmp_path / "keys" / "trust" / "ring.json").read_text())
    assert first.kid not in {k["kid"] for k in ring["keys"]}  # the first key is gone
    chain = json.loads((tmp_path / "keys" / "trust" / "endorsements.json").read_text())
    # ... but a gate that pinned it still reaches today's key
    assert follow_endorsements(first, chain, now.kid).kid == now.kid
    listed = run(["keys", "list", "--purpose", "trust"], env, tmp_path).stdout
    assert "trust\t" in listed and "PRIVATE" not in listed
