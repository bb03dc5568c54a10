"""Both code faces: round trip, tamper resistance, key lookup, clock rules, junk input.

docs/code-format.md §3-§6; reasons from CONTRACT.md "Codes".
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import (
    FORMATS,
    CodeClaims,
    CodeError,
    Ed25519Signer,
    Es256Signer,
    VerificationKey,
    b45decode,
    b45encode,
    decode,
    encode_essc,
    encode_ykm,
    verify_code,
)
from gateway.codec.base45 import ALPHABET

from .keyring import ESSC_CQ, ESSC_CQ_IMPOSTOR, ESSC_SC, STRANGER, TRUST, YKM_ED, YKM_ES, lookup

IAT = 1_790_000_000
QR_ALNUM = set(ALPHABET)
REJECTED = {"malformed", "unknown_issuer", "bad_signature"}

holders16 = st.binary(min_size=16, max_size=16)
nonces = st.binary(min_size=12, max_size=12)
iats = st.integers(min_value=0, max_value=2**32 - 1)
lifetimes = st.integers(min_value=1, max_value=60)


def _ykm(signer: Ed25519Signer | Es256Signer = YKM_ED, **kw: object) -> str:
    args: dict[str, object] = {
        "holder": bytes(range(16)), "issued_at": IAT, "lifetime_s": 30, "nonce": bytes(12),
    }
    args.update(kw)
    return encode_ykm(signer=signer, **args)  # type: ignore[arg-type]


def _essc(signer: Es256Signer = ESSC_CQ, region: str = "CQ", **kw: object) -> str:
    args: dict[str, object] = {
        "holder": b"holder-0001", "issued_at": IAT, "lifetime_s": 30, "nonce": bytes(12),
    }
    args.update(kw)
    return encode_essc(region=region, signer=signer, **args)  # type: ignore[arg-type]


def _reason(code: str, now: float = IAT + 1, skew: int = 5) -> str:
    try:
        verify_code(code, lookup, now, skew)
    except CodeError as e:
        return e.reason
    return "ok"


SAMPLES = {
    "ykm-eddsa": ("YK1:", _ykm(YKM_ED)),
    "ykm-es256": ("YK1:", _ykm(YKM_ES)),
    "essc-cq": ("ESSC1:", _essc()),
    "essc-sc-maxholder": ("ESSC1:", _essc(ESSC_SC, "SC", holder=b"\xff" * 24)),
}


# --- round trip -------------------------------------------------------------------------------

@given(holder=holders16, nonce=nonces, iat=iats, lifetime=lifetimes,
       flags=st.integers(0, 255), es=st.booleans())
def test_ykm_round_trip(holder: bytes, nonce: bytes, iat: int, lifetime: int, flags: int,
                        es: bool) -> None:
    signer = YKM_ES if es else YKM_ED
    code = encode_ykm(holder=holder, issued_at=iat, lifetime_s=lifetime, signer=signer,
                      flags=flags, nonce=nonce)
    assert code.startswith("YK1:") and len(code) == 160 and set(code) <= QR_ALNUM
    claims = verify_code(code, lookup, now=iat + lifetime / 2)
    assert claims == CodeClaims(
        face="ykm", issuer="ykm", region=None, kid=signer.kid, alg=signer.alg, holder=holder,
        issued_at=iat, lifetime_s=lifetime, nonce=nonce, flags=flags,
    )
    assert claims.expires_at == iat + lifetime


@given(holder=st.binary(min_size=1, max_size=24), nonce=nonces, iat=iats, lifetime=lifetimes,
       sc=st.booleans())
def test_essc_round_trip(holder: bytes, nonce: bytes, iat: int, lifetime: int, sc: bool) -> None:
    signer, region = (ESSC_SC, "SC") if sc else (ESSC_CQ, "CQ")
    code = encode_essc(region=region, holder=holder, issued_at=iat, lifetime_s=lifetime,
                       signer=signer, nonce=nonce)
    assert code.startswith("ESSC1:") and set(code) <= QR_ALNUM
    claims = verify_code(code, lookup, now=iat)
    assert claims == CodeClaims(
        face="essc", issuer=f"essc:{region}", region=region, kid=signer.kid, alg="ES256",
        holder=holder, issued_at=iat, lifetime_s=lifetime, nonce=nonce, flags=0,
    )


def test_default_nonce_is_fresh() -> None:
    a = decode(encode_ykm(holder=bytes(16), issued_at=IAT, lifetime_s=30, signer=YKM_ED))
    b = decode(encode_ykm(holder=bytes(16), issued_at=IAT, lifetime_s=30, signer=YKM_ED))
    assert a.claims.nonce != b.claims.nonce and len(a.claims.nonce) == 12


def test_registry_dispatches_by_prefix() -> None:
    assert set(FORMATS) == {"YK1:", "ESSC1:", "YK2:"}
    assert decode(_ykm()).claims.face == "ykm"
    assert decode(_essc()).claims.face == "essc"


# --- tamper resistance ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_single_byte_change_of_the_binary_is_rejected(name: str) -> None:
    prefix, code = SAMPLES[name]
    raw = b45decode(code[len(prefix):])
    assert _reason(code) == "ok"
    for i in range(len(raw)):
        for v in range(256):
            if v == raw[i]:
                continue
            forged = prefix + b45encode(raw[:i] + bytes((v,)) + raw[i + 1:])
            reason = _reason(forged)
            assert reason in REJECTED, (name, i, v, reason)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_single_character_change_of_the_string_is_rejected(name: str) -> None:
    _, code = SAMPLES[name]
    for i in range(len(code)):
        for ch in ALPHABET + "a\x00é":
            if ch == code[i]:
                continue
            reason = _reason(code[:i] + ch + code[i + 1:])
            assert reason in REJECTED, (name, i, ch, reason)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_and_extension_is_malformed(name: str) -> None:
    prefix, code = SAMPLES[name]
    for n in range(len(code)):
        assert _reason(code[:n]) == "malformed", n
    raw = b45decode(code[len(prefix):])
    for n in range(len(raw)):
        assert _reason(prefix + b45encode(raw[:n])) in REJECTED, n
    for extra in (b"\x00", b"\x00\x00", bytes(64)):
        assert _reason(prefix + b45encode(raw + extra)) == "malformed"


@settings(max_examples=200)
@given(data=st.data(), holder=holders16, nonce=nonces, iat=iats, lifetime=lifetimes,
       face=st.sampled_from(["ykm-eddsa", "ykm-es256", "essc"]))
def test_random_byte_changes_of_random_codes_are_rejected(
    data: st.DataObject, holder: bytes, nonce: bytes, iat: int, lifetime: int, face: str
) -> None:
    if face == "essc":
        prefix, code = "ESSC1:", _essc(holder=holder, nonce=nonce, issued_at=iat,
                                       lifetime_s=lifetime)
    else:
        signer = YKM_ED if face == "ykm-eddsa" else YKM_ES
        prefix, code = "YK1:", _ykm(signer, holder=holder, nonce=nonce, issued_at=iat,
                                    lifetime_s=lifetime)
    assert _reason(code, now=iat) == "ok"
    raw = bytearray(b45decode(code[len(prefix):]))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    assert _reason(prefix + b45encode(bytes(raw)), now=iat) in REJECTED


def test_prefix_is_signed_domain_separation() -> None:
    """An essc signature cannot be moved under another prefix, nor a ykm body re-labelled."""
    code = _ykm()
    assert _reason("YK2:" + code[4:]) == "malformed"
    assert _reason("ESSC1:" + code[4:]) == "malformed"


# --- keys ---------------------------------------------------------------------------------------

def test_wrong_key_with_known_kid_is_bad_signature() -> None:
    assert _reason(_essc(ESSC_CQ_IMPOSTOR)) == "bad_signature"
    # A key listed under the right ykm kid but not the signer's: only constructible for essc,
    # since a ykm kid must be derived from its key.
    forged = VerificationKey(issuer="essc:CQ", kid=ESSC_CQ.kid, alg="ES256",
                             public_key=ESSC_CQ_IMPOSTOR.public_key())
    with pytest.raises(CodeError) as e:
        verify_code(_essc(), lambda i, k: forged, IAT)
    assert e.value.reason == "bad_signature"
    with pytest.raises(ValueError):
        VerificationKey.of("ykm", STRANGER.public_key(), YKM_ED.kid)


def test_alg_mismatch_is_bad_signature() -> None:
    # An essc key listed with the right kid but used for a code claiming another alg can't
    # happen (essc is ES256 only), so check ykm: flip the alg byte 1 -> 2 on an EdDSA code.
    raw = bytearray(b45decode(_ykm(YKM_ED)[4:]))
    raw[1] = 2
    assert _reason("YK1:" + b45encode(bytes(raw))) == "bad_signature"


def test_unknown_kid_is_unknown_issuer() -> None:
    assert _reason(_ykm(STRANGER)) == "unknown_issuer"
    assert _reason(_essc(ESSC_CQ, "SC")) == "unknown_issuer"  # CQ key used for an SC code
    assert _reason(_essc(Es256Signer.from_scalar(bytes(31) + b"\x07", kid="x"))) == (
        "unknown_issuer"
    )


def test_key_validity_window_at_issued_at() -> None:
    vk = VerificationKey.of("ykm", YKM_ED.public_key(), not_before=IAT, not_after=IAT + 100)

    def only(i: str, k: str) -> VerificationKey | None:
        return vk if (i, k) == ("ykm", vk.kid) else None

    assert verify_code(_ykm(issued_at=IAT), only, IAT).issued_at == IAT
    assert verify_code(_ykm(issued_at=IAT + 99), only, IAT + 99).issued_at == IAT + 99
    for iat in (IAT - 1, IAT + 100):
        with pytest.raises(CodeError) as e:
            verify_code(_ykm(issued_at=iat), only, iat)
        assert e.value.reason == "unknown_issuer"


def test_lookup_returning_mismatched_key_is_unknown_issuer() -> None:
    cq = TRUST[("essc:CQ", ESSC_CQ.kid)]
    with pytest.raises(CodeError) as e:
        verify_code(_essc(ESSC_SC, "SC"), lambda i, k: cq, IAT)
    assert e.value.reason == "unknown_issuer"


@pytest.mark.parametrize("vk", sorted(TRUST.values(), key=lambda v: v.kid), ids=lambda v: v.kid)
def test_jwk_round_trip(vk: VerificationKey) -> None:
    jwk = vk.to_jwk()
    assert jwk["use"] == "sig" and jwk["kid"] == vk.kid and jwk["alg"] == vk.alg
    assert jwk["kty"] == ("OKP" if vk.alg == "EdDSA" else "EC")
    assert VerificationKey.from_jwk(jwk) == vk
    windowed = VerificationKey.from_jwk(jwk, not_before=1, not_after=2)
    assert VerificationKey.from_jwk(windowed.to_jwk()) == windowed


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "k", "iss": "ykm"},
        {"kty": "OKP", "crv": "X25519", "x": "A" * 43, "kid": "k", "iss": "ykm"},
        {"kty": "EC", "crv": "P-384", "x": "A" * 43, "y": "A" * 43, "kid": "k", "iss": "essc:CQ"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "k", "iss": "ykm"},
    ],
)
def test_bad_jwks_are_refused(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        VerificationKey.from_jwk(jwk)


def test_private_jwk_and_wrong_use_are_refused() -> None:
    jwk = TRUST[("essc:CQ", ESSC_CQ.kid)].to_jwk()
    with pytest.raises(ValueError):
        VerificationKey.from_jwk({**jwk, "d": "A" * 43})
    with pytest.raises(ValueError):
        VerificationKey.from_jwk({**jwk, "use": "enc"})
    with pytest.raises(ValueError):
        VerificationKey.from_jwk({**jwk, "alg": "EdDSA"})


def test_ykm_kid_is_derived_from_public_key() -> None:
    import hashlib

    from gateway.codec import raw_public_key

    for signer in (YKM_ED, YKM_ES):
        raw = raw_public_key(signer.public_key())
        assert len(raw) == (32 if signer.alg == "EdDSA" else 65)
        assert signer.kid == hashlib.sha256(raw).digest()[:4].hex()
        assert decode(_ykm(signer)).claims.kid == signer.kid
    with pytest.raises(ValueError):
        _ykm(ESSC_CQ)  # a platform kid is not a derived ykm kid


# --- clock --------------------------------------------------------------------------------------

@given(iat=st.integers(10, 2**32 - 100), lifetime=lifetimes, skew=st.integers(0, 30),
       face=st.sampled_from(["ykm", "essc"]))
def test_clock_boundaries(iat: int, lifetime: int, skew: int, face: str) -> None:
    code = _ykm(issued_at=iat, lifetime_s=lifetime) if face == "ykm" else _essc(
        issued_at=iat, lifetime_s=lifetime)
    assert _reason(code, iat - skew, skew) == "ok"
    assert _reason(code, iat - skew - 0.001, skew) == "not_yet_valid"
    assert _reason(code, iat + lifetime + skew, skew) == "ok"
    assert _reason(code, iat + lifetime + skew + 0.001, skew) == "expired"


def test_checks_run_in_contract_order() -> None:
    # bad signature wins over expiry; unknown issuer wins over bad signature
    raw = bytearray(b45decode(_ykm()[4:]))
    raw[-1] ^= 1
    assert _reason("YK1:" + b45encode(bytes(raw)), now=IAT + 10_000) == "bad_signature"
    assert _reason(_essc(ESSC_CQ_IMPOSTOR, "SC"), now=IAT + 10_000) == "unknown_issuer"


@pytest.mark.parametrize("lifetime", [0, 61, 255, -1])
def test_lifetime_outside_1_to_60_is_refused_at_encode(lifetime: int) -> None:
    with pytest.raises(CodeError) as e:
        _ykm(lifetime_s=lifetime)
    assert e.value.reason == "malformed"
    with pytest.raises(CodeError):
        _essc(lifetime_s=lifetime)


def test_lifetime_over_60_on_the_wire_is_malformed() -> None:
    raw = bytearray(b45decode(_ykm()[4:]))
    raw[26] = 61
    assert _reason("YK1:" + b45encode(bytes(raw))) == "malformed"


@pytest.mark.parametrize(
    "kw",
    [
        {"holder": bytes(15)}, {"holder": bytes(17)}, {"nonce": bytes(11)}, {"flags": 256},
        {"issued_at": -1}, {"issued_at": 2**32}, {"issued_at": True},
    ],
)
def test_encode_ykm_refuses_bad_fields(kw: dict[str, object]) -> None:
    with pytest.raises(CodeError):
        _ykm(**kw)


@pytest.mark.parametrize(
    ("region", "kw"),
    [("cq", {}), ("CQX", {}), ("CQ", {"holder": b""}), ("CQ", {"holder": bytes(25)}),
     ("CQ", {"nonce": bytes(13)})],
)
def test_encode_essc_refuses_bad_fields(region: str, kw: dict[str, object]) -> None:
    with pytest.raises(CodeError):
        _essc(region=region, **kw)


def test_encode_essc_needs_es256() -> None:
    with pytest.raises(ValueError):
        encode_essc(region="CQ", holder=b"x", issued_at=IAT, lifetime_s=30,
                    signer=YKM_ED)


# --- junk ---------------------------------------------------------------------------------------

def _assert_malformed(text: str) -> None:
    with pytest.raises(CodeError) as e:
        verify_code(text, lookup, IAT)
    assert e.value.reason == "malformed"
    assert str(e.value) == "malformed"  # never echoes the input


@given(st.text(max_size=400))
def test_random_text_is_malformed(text: str) -> None:
    _assert_malformed(text)


@given(st.sampled_from(["YK1:", "ESSC1:"]), st.text(alphabet=ALPHABET, max_size=400))
def test_random_base45_after_a_valid_prefix_is_malformed_or_rejected(prefix: str,
                                                                    body: str) -> None:
    assert _reason(prefix + body) in REJECTED


@given(st.sampled_from(["ESSC1:"]), st.binary(max_size=200))
def test_random_essc_binary_never_raises_anything_else(prefix: str, raw: bytes) -> None:
    assert _reason(prefix + b45encode(raw)) in REJECTED


@pytest.mark.parametrize(
    "text",
    [
        "", ":", "YK1", "YK1:", "ESSC1:", "yk1:" + _ykm()[4:], " " + _ykm(), _ykm() + " ",
        "https://example.com/?code=YK1:ABC", "YK1:" + "0" * 10_000, "A" * 10_240,
        "\x00" * 10_240, "渝快码" * 1000, "ESSC1:" + b45encode(bytes(300)),
    ],
)
def test_junk_is_malformed(text: str) -> None:
    _assert_malformed(text)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x90", b"\x80", b"\xc0", b"\x97" + b"\x01" * 7, b"\x87" + b"\x01" * 14,
        # right shape, wrong types: bool instead of int, str instead of bin, float iat
        b"\x97\xc3\xa2CQ\xa1k\xc4\x01x\xce\x00\x00\x00\x01\x1e\xc4\x0c" + bytes(12),
        b"\x97\x01\xa2CQ\xa1k\xa1x\xce\x00\x00\x00\x01\x1e\xc4\x0c" + bytes(12),
        b"\x97\x01\xa2CQ\xa1k\xc4\x01x\xcb" + bytes(8) + b"\x1e\xc4\x0c" + bytes(12),
        b"\x97\x01\xa2cq\xa1k\xc4\x01x\xce\x00\x00\x00\x01\x1e\xc4\x0c" + bytes(12),
        b"\x97\x01\xa2CQ\xa1k\xc4\x01x\xce\x00\x00\x00\x01\x3d\xc4\x0c" + bytes(12),
        b"\x97\x01\xa2CQ\xa1k\xc4\x01x\xce\x00\x00\x00\x01\x1e\xc4\x0c" + bytes(12) + b"\x00",
        b"\x97\x01\xa2C\xff\xa1k\xc4\x01x\xce\x00\x00\x00\x01\x1e\xc4\x0c" + bytes(12),
    ],
)
def test_bad_essc_payloads_are_malformed(payload: bytes) -> None:
    raw = bytes((len(payload),)) + payload + bytes(64)
    _assert_malformed("ESSC1:" + b45encode(raw))


def test_well_formed_essc_payload_reaches_key_lookup() -> None:
    """Control for the test above: the same layout with valid types decodes."""
    payload = b"\x97\x01\xa2CQ\xa1k\xc4\x01x\xce\x00\x00\x00\x01\x1e\xc4\x0c" + bytes(12)
    assert _reason("ESSC1:" + b45encode(bytes((len(payload),)) + payload + bytes(64))) == (
        "unknown_issuer"
    )


def test_code_error_reasons_are_closed() -> None:
    with pytest.raises(ValueError):
        CodeError("nope")  # type: ignore[arg-type]
