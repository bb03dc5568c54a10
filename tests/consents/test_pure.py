"""Pure pieces of the consent service: approval codes, the derived status, request parsing,
the per-type field lists against the sandbox library's certificates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import InvalidRequest
from gateway.services.consents import (
    APPROVAL_ALPHABET,
    APPROVAL_CODE_LEN,
    AUTHORISED,
    AWAITING,
    EXPIRED,
    FIELDS_BY_TYPE,
    REVOKED,
    Consent,
    ConsentPolicy,
    ConsentRequest,
    new_approval_code,
    normalise_approval_code,
    safe_id,
)
from gateway.services.upstream import CERTIFICATE_TYPES, load_residents


def test_approval_codes_are_qr_alphanumeric_and_distinct() -> None:
    codes = {new_approval_code() for _ in range(2000)}
    assert len(codes) == 2000
    qr_alnum = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert all(len(c) == APPROVAL_CODE_LEN and set(c) <= qr_alnum for c in codes)


@given(st.text(alphabet=APPROVAL_ALPHABET, min_size=APPROVAL_CODE_LEN,
               max_size=APPROVAL_CODE_LEN), st.integers(1, APPROVAL_CODE_LEN - 1))
def test_typed_codes_normalise(code: str, cut: int) -> None:
    typed = (code[:cut] + "-" + code[cut:]).lower().replace("0", "o").replace("1", "l")
    assert normalise_approval_code(typed) == code
    assert normalise_approval_code(f"  {code} ") == code


@given(st.text(max_size=40))
def test_anything_else_is_not_a_code(text: str) -> None:
    got = normalise_approval_code(text)
    assert got is None or (len(got) == APPROVAL_CODE_LEN and set(got) <= set(APPROVAL_ALPHABET))


@given(st.sampled_from([AWAITING, AUTHORISED, REVOKED]), st.floats(0, 10_000))
def test_effective_status(status: str, t: float) -> None:
    c = Consent(id="cns_" + "a" * 22, client_id="rp", sector="s", subject="x", person_id="p",
                types=("degree",), purpose_code="p", purpose_text="t", created_at=0.0,
                approve_by=600.0, expires_at=3600.0, max_uses=1, status=status)
    got = c.effective_status(t)
    if status == AWAITING:
        assert got == (EXPIRED if t >= 600 else AWAITING)
    elif status == AUTHORISED:
        assert got == (EXPIRED if t >= 3600 else AUTHORISED)
    else:
        assert got == REVOKED   # a decided end state never turns into expired
    assert Consent.from_record(c.to_record()) == c


GOOD = {"subject": "s", "certificate_types": ["degree"],
        "purpose": {"code": "hr.check", "text": "入职"}, "expires_in": 3600, "max_uses": 2}


@pytest.mark.parametrize("change", [
    {"subject": ""}, {"subject": 5}, {"certificate_types": []},
    {"certificate_types": ["degree", "passport"]}, {"certificate_types": "degree"},
    {"purpose": {"code": "BAD CODE", "text": "x"}}, {"purpose": {"code": "a", "text": ""}},
    {"purpose": {"code": "a", "text": "x" * 201}}, {"purpose": 3}, {"expires_in": 10},
    {"expires_in": 400 * 86400}, {"expires_in": True}, {"max_uses": 0},
    {"max_uses": 1001}, {"max_uses": 1.5},
])
def test_bad_requests(change: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        ConsentRequest.parse({**GOOD, **change}, ConsentPolicy())


def test_good_request_and_defaults() -> None:
    r = ConsentRequest.parse({**GOOD, "certificate_types": ["degree", "degree"]},
                             ConsentPolicy())
    assert r.types == ("degree",) and r.max_uses == 2
    d = ConsentRequest.parse({"subject": "s", "certificate_types": ["degree"],
                              "purpose": "看一下"}, ConsentPolicy())
    assert (d.purpose_code, d.expires_in, d.max_uses) == ("general", 86400, 1)


def test_field_lists_cover_the_library_and_its_demo_certificates() -> None:
    assert set(FIELDS_BY_TYPE) == set(CERTIFICATE_TYPES)
    for r in load_residents():
        for c in r.certificates:
            assert set(c.fields) <= FIELDS_BY_TYPE[c.type], (r.id, c.type)


def test_allow_list_is_per_client_and_closed_by_default() -> None:
    p = ConsentPolicy()
    assert p.allowed_types("rp-service-hall") == CERTIFICATE_TYPES
    assert "degree" not in p.allowed_types("rp-jingkuaiban")
    assert p.allowed_types("rp-unknown") == frozenset()
    assert ConsentPolicy(types_by_client={}).allowed_types("rp-service-hall") == frozenset()


@given(st.text(max_size=200))
def test_junk_ids_never_enter_the_log_verbatim(junk: str) -> None:
    safe = safe_id(junk)
    assert safe is not None
    assert safe == junk or (safe.startswith("forged:") and len(safe) == 19)


def test_policy_refuses_unknown_types() -> None:
    with pytest.raises(ValueError, match="passport"):
        ConsentPolicy(types_by_client={"rp-x": frozenset({"degree", "passport"})})
