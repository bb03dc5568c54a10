"""PSAM terminal MAC (pure), demo residents, card numbers, sandbox key files."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.sandbox import (
    PsamSandbox,
    build_sandbox_upstreams,
    load_or_create_ec_key,
)
from gateway.clock import FrozenClock
from gateway.services.upstream import (
    PsamAttestation,
    citizen_id_check_char,
    compute_terminal_mac,
    derive_gate_key,
    is_valid_card_no,
    is_valid_citizen_id,
    load_residents,
    mask_citizen_id,
    ssc_card_check_digit,
    verify_terminal_mac,
)

MASTER = bytes(range(32))
TAP = {"card_no": "CQ100000025", "region": "CQ", "gate_client_id": "gate-metro-l1-001",
       "request_id": "req-7f3a", "scanned_at": "2027-01-15T08:00:00+08:00"}
field_text = st.text(alphabet=st.characters(blacklist_characters="|",
                                            blacklist_categories=("Cs",)), max_size=40)


def test_mac_round_trip_and_format() -> None:
    mac = compute_terminal_mac(MASTER, **TAP)
    assert len(base64.urlsafe_b64decode(mac + "=")) == 32 and "=" not in mac
    k = derive_gate_key(MASTER, TAP["gate_client_id"])
    assert verify_terminal_mac(k, **TAP, terminal_mac=mac)


@pytest.mark.parametrize("field", sorted(TAP))
def test_any_single_field_changed_fails(field: str) -> None:
    mac = compute_terminal_mac(MASTER, **TAP)
    k = derive_gate_key(MASTER, TAP["gate_client_id"])
    changed = {**TAP, field: TAP[field] + "0"}
    assert not verify_terminal_mac(k, **changed, terminal_mac=mac)
    # and the gate key of another gate does not verify either
    assert not verify_terminal_mac(derive_gate_key(MASTER, "gate-other"), **TAP,
                                   terminal_mac=mac)


def test_mac_with_wrong_master_or_garbage_fails() -> None:
    k = derive_gate_key(MASTER, TAP["gate_client_id"])
    assert not verify_terminal_mac(k, **TAP, terminal_mac=compute_terminal_mac(b"x" * 32, **TAP))
    for junk in ("", "AAAA", "码" * 43, compute_terminal_mac(MASTER, **TAP)[:-1]):
        assert not verify_terminal_mac(k, **TAP, terminal_mac=junk)


def test_separator_in_a_field_is_refused() -> None:
    # "a|b" + "c" and "a" + "b|c" would otherwise MAC the same bytes.
    with pytest.raises(ValueError):
        compute_terminal_mac(MASTER, **{**TAP, "request_id": "r|1"})
    mac = compute_terminal_mac(MASTER, **TAP)
    k = derive_gate_key(MASTER, TAP["gate_client_id"])
    assert not verify_terminal_mac(k, **{**TAP, "request_id": "r|1"}, terminal_mac=mac)


@given(a=st.fixed_dictionaries({k: field_text for k in TAP}),
       b=st.fixed_dictionaries({k: field_text for k in TAP}))
def test_mac_verifies_iff_fields_equal(a: dict[str, str], b: dict[str, str]) -> None:
    mac = compute_terminal_mac(MASTER, **a)
    k = derive_gate_key(MASTER, b["gate_client_id"])
    assert verify_terminal_mac(k, **b, terminal_mac=mac) == (a == b)


def test_psam_attestation_with_master_or_provisioned_keys() -> None:
    mac = compute_terminal_mac(MASTER, **TAP)
    assert PsamAttestation(master_key=MASTER).verify(**TAP, terminal_mac=mac)
    provisioned = PsamAttestation(gate_keys={
        TAP["gate_client_id"]: derive_gate_key(MASTER, TAP["gate_client_id"])})
    assert provisioned.verify(**TAP, terminal_mac=mac)
    assert not provisioned.verify(**{**TAP, "gate_client_id": "gate-unknown"}, terminal_mac=mac)
    assert "gate" in repr(provisioned) and MASTER.hex() not in repr(provisioned)


def test_psam_sandbox_master_key_file_is_private_and_shared(tmp_path: Path) -> None:
    a, b = PsamSandbox(tmp_path), PsamSandbox(tmp_path)
    assert a.master_key == b.master_key
    mac = a.terminal_mac(**TAP)
    assert PsamAttestation(master_key=b.master_key).verify(**TAP, terminal_mac=mac)
    (key_file,) = (tmp_path / "sandbox-upstreams").glob("psam-master.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


# --- residents ------------------------------------------------------------------------------

def test_fixture_citizen_ids_pass_the_check_digit() -> None:
    residents = load_residents()
    assert 4 <= len(residents) <= 6
    for r in residents:
        assert is_valid_citizen_id(r.citizen_id), r.id
        assert r.citizen_id[:3] in ("500", "510")
    assert any(r.citizen_id.startswith("510") for r in residents)


def test_fixture_shape() -> None:
    residents = load_residents()
    assert any({a.region for a in r.essc_accounts} >= {"CQ", "SC"} for r in residents)
    statuses = [c.status for r in residents for c in r.cards]
    assert "replaced" in statuses and "lost" in statuses
    replaced_owner = next(r for r in residents if any(c.status == "replaced" for c in r.cards))
    assert any(c.status == "active" for c in replaced_owner.cards)  # the replacement card
    assert all(is_valid_card_no(c.card_no) for r in residents for c in r.cards)
    assert {r.concession for r in residents} >= {"senior", "disabled", "student", None}
    assert len({c.card_no for r in residents for c in r.cards}) == len(statuses)


def test_resident_repr_masks_the_citizen_id() -> None:
    for r in load_residents():
        assert r.citizen_id not in repr(r)
        assert mask_citizen_id(r.citizen_id) in repr(r)


def test_known_gb11643_vector() -> None:
    # The example number of GB 11643-1999 itself.
    assert citizen_id_check_char("11010519491231002") == "X"
    assert is_valid_citizen_id("11010519491231002X")
    assert is_valid_citizen_id("11010519491231002x")
    assert not is_valid_citizen_id("110105194912310021")
    assert not is_valid_citizen_id("１１010519491231002X")  # full-width digits


@given(st.text(alphabet="0123456789", min_size=17, max_size=17), st.integers(0, 16),
       st.integers(1, 9))
def test_check_digit_catches_any_single_digit_error(body: str, pos: int, delta: int) -> None:
    cid = body + citizen_id_check_char(body)
    assert is_valid_citizen_id(cid)
    wrong = body[:pos] + str((int(body[pos]) + delta) % 10) + body[pos + 1:]
    assert not is_valid_citizen_id(wrong + cid[17])


@given(st.sampled_from(["CQ", "SC", "GZ"]), st.text(alphabet="0123456789", min_size=8,
                                                    max_size=8), st.integers(2, 9),
       st.integers(1, 9))
def test_card_check_digit_catches_single_errors(region: str, serial: str, pos: int,
                                                delta: int) -> None:
    body = region + serial
    card = body + ssc_card_check_digit(body)
    assert is_valid_card_no(card)
    wrong = body[:pos] + str((int(body[pos]) + delta) % 10) + body[pos + 1:]
    assert not is_valid_card_no(wrong + card[10])


def test_loader_refuses_a_bad_check_digit(tmp_path: Path) -> None:
    doc = json.loads((Path(__file__).parents[2] / "gateway/data/residents.json").read_text())
    doc["residents"][0]["citizen_id"] = doc["residents"][0]["citizen_id"][:17] + "0"
    p = tmp_path / "r.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(ValueError) as e:
        load_residents(p)
    assert doc["residents"][0]["citizen_id"] not in str(e.value)


def test_identity_dataclasses_are_frozen() -> None:
    r = load_residents()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.citizen_id = "x"  # type: ignore[misc]


# --- sandbox keys ---------------------------------------------------------------------------

def test_sandbox_keys_are_0600_and_reused(tmp_path: Path) -> None:
    a = load_or_create_ec_key(tmp_path, "ykb-assertion", 1.8e9)
    b = load_or_create_ec_key(tmp_path, "ykb-assertion", 1.9e9)
    assert a.kid == b.kid and a.created_at == b.created_at
    pem = tmp_path / "sandbox-upstreams" / "ykb-assertion.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert "PRIVATE" not in repr(a) and "d" not in a.public_jwk()
    os.chmod(pem, 0o644)
    with pytest.raises(RuntimeError):
        load_or_create_ec_key(tmp_path, "ykb-assertion", 1.8e9)


def test_two_gateway_workers_agree_on_sandbox_keys(tmp_path: Path) -> None:
    residents = load_residents()
    w1 = build_sandbox_upstreams(residents, tmp_path, "https://gw", clock=FrozenClock())
    w2 = build_sandbox_upstreams(residents, tmp_path, "https://gw", clock=FrozenClock())
    assert set(w1) == {"ykb", "essc", "certlib"}
    from gateway.adapters.sandbox import ESSC_SANDBOX, YKB_SANDBOX
    assert (w1["ykb"][YKB_SANDBOX].signing.key.kid == w2["ykb"][YKB_SANDBOX].signing.key.kid)
    e1, e2 = w1["essc"][ESSC_SANDBOX], w2["essc"][ESSC_SANDBOX]
    assert e1.code_jwks("SC") == e2.code_jwks("SC")
