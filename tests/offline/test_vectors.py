"""tests/vectors/trust.json: committed, reproducible, and every document verifies (or is
refused) as stated, by the SDK; the trust list verifies the code vectors of codes.json."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import Ed25519Signer, verify_code
from gateway.codec.jws import JwsKey, canonical_json, sign_compact
from gateway.codec.offline import DENY_LIST_TYP
from gateway_gate import GateError, parse_deny_list, parse_trust_list
from tests.vectors.common import secret
from tests.vectors.make_trust_vectors import build

VECTORS = Path(__file__).parents[1] / "vectors"
DOC = json.loads((VECTORS / "trust.json").read_text("utf-8"))
CODES = {v["name"]: v for v in json.loads((VECTORS / "codes.json").read_text("utf-8"))["vectors"]}
ANCHOR = JwsKey.from_jwk(DOC["trust_anchor"]["jwk"])
BY_NAME = {v["name"]: v for v in DOC["vectors"]}


def test_committed_file_equals_a_fresh_build() -> None:
    assert build() == DOC


def _raw(v: dict[str, Any]) -> bytes:
    return json.dumps(v["answer"]).encode()


@pytest.mark.parametrize("name", [v["name"] for v in DOC["vectors"]
                                  if v["name"].startswith("trust_list")])
def test_trust_list_vectors(name: str) -> None:
    v = BY_NAME[name]
    exp = v["expect"]
    if exp["result"] == "error":
        with pytest.raises(GateError) as e:
            parse_trust_list(_raw(v), ANCHOR)
        assert e.value.code == exp["reason"]
        return
    tl, signer = parse_trust_list(_raw(v), ANCHOR)
    assert tl.version == exp["version"] and signer.kid == exp["signer_kid"]
    if "new_pin" in exp:
        assert signer.to_jwk() == exp["new_pin"]
    if "payload_utf8" in v:  # the payload is exactly the bytes signed
        p = v["answer"]["jws"].split(".")[1]
        assert base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)).decode() == v["payload_utf8"]
    if "verifies_code_vector" in exp:
        cv = CODES[exp["verifies_code_vector"]]
        claims = verify_code(cv["code"], tl.lookup, cv["now"], tl.code_max_skew_s)
        assert claims.kid == cv["expect"]["claims"]["kid"]
        assert tl.scenes["pharmacy"].permits("essc", "SC") is False


def test_deny_list_vectors() -> None:
    full_v, delta_v = BY_NAME["deny_list_full"], BY_NAME["deny_list_delta_after_full"]
    full = parse_deny_list(_raw(full_v), ANCHOR, None)
    assert full.hash.of("CQ", "CQ100000249") == full_v["expect"]["card_hash_CQ100000249"]
    for region, card in full_v["expect"]["denied"]:
        assert full.is_denied(region, card)
    for region, card in full_v["expect"]["not_denied"]:
        assert not full.is_denied(region, card)
    merged = parse_deny_list(_raw(delta_v), ANCHOR, full)
    for region, card in delta_v["expect"]["denied"]:
        assert merged.is_denied(region, card)
    for region, card in delta_v["expect"]["not_denied"]:
        assert not merged.is_denied(region, card)
    # the delta alone (no list to apply it to), and the full list after the delta: refused
    with pytest.raises(GateError):
        parse_deny_list(_raw(delta_v), ANCHOR, None)
    with pytest.raises(GateError) as e:
        parse_deny_list(_raw(full_v), ANCHOR, merged)
    assert e.value.code == "rollback"


def test_deny_list_rollback_rule() -> None:
    """Older issue time: refused. Same minute, lower version: refused. Later issue time with a
    lower version (the gateway's store was restored): the gateway's view wins."""
    signer = Ed25519Signer.from_seed(secret("trust-list-key-0"))
    base = BY_NAME["deny_list_full"]["answer"]["deny_list"]

    def doc(**kw: Any) -> bytes:
        d = {**base, **kw}
        return json.dumps({"deny_list": d, "jws": sign_compact(signer, canonical_json(d),
                                                                DENY_LIST_TYP)}).encode()

    held = parse_deny_list(doc(), ANCHOR, None)
    with pytest.raises(GateError) as e:
        parse_deny_list(doc(version=base["version"] - 1), ANCHOR, held)
    assert e.value.code == "rollback"
    with pytest.raises(GateError):
        parse_deny_list(doc(issued_at=base["issued_at"] - 60, version=base["version"] + 5),
                        ANCHOR, held)
    restored = parse_deny_list(doc(issued_at=base["issued_at"] + 60, version=3, entries=[]),
                               ANCHOR, held)
    assert restored.version == 3 and restored.entries == set()


def test_a_tampered_deny_list_is_refused() -> None:
    answer = BY_NAME["deny_list_full"]["answer"]
    header, payload, sig = answer["jws"].split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    # one entry's hash changed by one bit: a card taken off the list
    i = raw.index(b'"entries":["') + 12
    raw[i] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    for jws in (f"{header}.{forged}.{sig}",
                BY_NAME["trust_list_signed_by_the_anchor"]["answer"]["jws"]):  # another typ
        with pytest.raises(GateError) as e:
            parse_deny_list(json.dumps({**answer, "jws": jws}).encode(), ANCHOR, None)
        assert e.value.code == "bad_signature"
    stranger = Ed25519Signer.from_seed(secret("trust-list-stranger"))
    doc = answer["deny_list"]
    with pytest.raises(GateError) as e:
        parse_deny_list(json.dumps({"deny_list": doc, "jws": sign_compact(
            stranger, canonical_json(doc), DENY_LIST_TYP)}).encode(), ANCHOR, None)
    assert e.value.code == "untrusted_signer"


def _signed(doc: dict[str, Any], typ: str, seed: str = "trust-list-key-0") -> bytes:
    signer = Ed25519Signer.from_seed(secret(seed))
    return json.dumps({"deny_list": doc, "jws": sign_compact(signer, canonical_json(doc),
                                                             typ)}).encode()


@pytest.mark.parametrize("kind", ["cards", "devices"])
def test_both_deny_lists_open_through_the_one_verifier(kind: str) -> None:
    """The card and the device deny-list are opened by one piece (documents.open_signed_list):
    the same refusals, each list keeping its own entries and rollback rule."""
    from gateway.codec.device import DEVICE_DENY_LIST_TYP
    from gateway_gate import parse_device_deny_list

    cards = BY_NAME["deny_list_full"]["answer"]["deny_list"]
    typ, parse = ((DENY_LIST_TYP, parse_deny_list) if kind == "cards"
                  else (DEVICE_DENY_LIST_TYP, parse_device_deny_list))
    times = {k: cards[k] for k in ("version", "issued_at", "next_update", "expires_at")}
    full = ({**cards} if kind == "cards" else
            {"list": "devices", **times, "full": True,
             "entries": [{"serial": "ab" * 12, "not_after": cards["expires_at"]}]})
    held = parse(_signed(full, typ), ANCHOR, None)
    assert held.version == cards["version"] and len(held.entries) == len(full["entries"])

    def refused(raw: bytes, held: Any = None) -> str:
        with pytest.raises(GateError) as e:
            parse(raw, ANCHOR, held)
        return e.value.code

    assert refused(b"not json") == "document_invalid"
    assert refused(b"[1]") == "document_invalid"
    assert refused(json.dumps({"deny_list": full}).encode()) == "document_invalid"  # no jws
    other = "devices" if kind == "cards" else "cards"
    assert refused(_signed({**full, "list": other}, typ)) == "document_invalid"
    assert refused(_signed(full, typ, seed="trust-list-stranger")) == "untrusted_signer"
    wrong_typ = DEVICE_DENY_LIST_TYP if kind == "cards" else DENY_LIST_TYP
    assert refused(_signed(full, wrong_typ)) == "bad_signature"
    assert refused(_signed({**full, "version": -1}, typ)) == "document_invalid"
    delta = {**{k: v for k, v in full.items() if k != "entries"}, "full": False,
             "since": held.version + 1, "added": [], "removed": [],
             "version": held.version + 2, "issued_at": held.issued_at + 60}
    assert refused(_signed(delta, typ), held) == "document_invalid"  # not from the one held
    assert refused(_signed({**delta, "since": held.version}, typ)) == "document_invalid"
    merged = parse(_signed({**delta, "since": held.version}, typ), ANCHOR, held)
    assert merged.version == held.version + 2 and merged.entries == held.entries
    older = {**full, "version": held.version - 1, "issued_at": held.issued_at - 60}
    assert refused(_signed(older, typ), held) == "rollback"
