"""Device certificates and ``YK2:`` codes (docs/code-format.md §10): round trip, every byte
flip, every truncation, the chain's reasons, extensible device algorithms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import (
    DEVICE_ALGS,
    CodeError,
    DeviceAlgorithm,
    Ed25519Signer,
    Es256Signer,
    b45decode,
    b45encode,
    decode,
    encode_certificate,
    encode_yk2,
    normalise_device_key,
    parse_certificate,
    raw_public_key,
    register_device_alg,
    verify_code,
)
from gateway.codec.base45 import ALPHABET
from gateway.codec.device import MAX_CERT_TTL_S, certificate_size
from gateway.qr import qr_version

from .keyring import STRANGER, YKM_ED, YKM_ES, _secret, lookup

NBF = 1_790_000_000
NAF = NBF + 86_400
IAT = NBF + 600
DEV_ED = Ed25519Signer.from_seed(_secret("device-ed"))
DEV_ES = Es256Signer.from_scalar(_secret("device-es"))
DEV_OTHER = Ed25519Signer.from_seed(_secret("device-other"))
REJECTED = {"malformed", "unknown_issuer", "bad_signature"}
Signer = Ed25519Signer | Es256Signer


def _key(device: Signer) -> bytes:
    return normalise_device_key(device.alg, raw_public_key(device.public_key()))


def _cert(issuer: Signer = YKM_ED, device: Signer = DEV_ED, *, serial: bytes = bytes(12),
          holder: bytes = bytes(range(16)), flags: int = 0x81, nbf: int = NBF,
          naf: int = NAF) -> bytes:
    return encode_certificate(signer=issuer, device_alg=device.alg, device_key=_key(device),
                              serial=serial, holder=holder, flags=flags, not_before=nbf,
                              not_after=naf)


def _code(cert: bytes | None = None, device: Signer = DEV_ED, *, iat: int = IAT,
          lifetime: int = 30, counter: int = 1) -> str:
    return encode_yk2(certificate=_cert(device=device) if cert is None else cert,
                      issued_at=iat, lifetime_s=lifetime, counter=counter, signer=device)


def _reason(code: str, now: float = IAT + 1, skew: int = 5) -> str:
    try:
        verify_code(code, lookup, now, skew)
    except CodeError as e:
        return e.reason
    return "ok"


SAMPLES = {
    "ed-on-ed": _code(),
    "es-on-es": _code(_cert(YKM_ES, DEV_ES), DEV_ES),
    "es-on-ed": _code(_cert(YKM_ED, DEV_ES), DEV_ES),
}


# --- round trip -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(serial=st.binary(min_size=12, max_size=12), holder=st.binary(min_size=16, max_size=16),
       flags=st.integers(0, 255), nbf=st.integers(0, 2**32 - 1 - MAX_CERT_TTL_S),
       ttl=st.integers(1, MAX_CERT_TTL_S), offset=st.integers(0, MAX_CERT_TTL_S),
       lifetime=st.integers(1, 60), counter=st.integers(0, 2**32 - 1),
       issuer_es=st.booleans(), device_es=st.booleans())
def test_round_trip(serial: bytes, holder: bytes, flags: int, nbf: int, ttl: int, offset: int,
                    lifetime: int, counter: int, issuer_es: bool, device_es: bool) -> None:
    issuer = YKM_ES if issuer_es else YKM_ED
    device = DEV_ES if device_es else DEV_ED
    naf = nbf + ttl
    iat = min(nbf + offset, naf)
    cert = _cert(issuer, device, serial=serial, holder=holder, flags=flags, nbf=nbf, naf=naf)
    assert len(cert) == certificate_size(32 if device is DEV_ED else 33)
    parsed = parse_certificate(cert)
    assert (parsed.kid, parsed.alg, parsed.device_alg, parsed.device_key) == (
        issuer.kid, issuer.alg, device.alg, _key(device))
    assert (parsed.serial, parsed.holder, parsed.flags, parsed.not_before,
            parsed.not_after) == (serial, holder, flags, nbf, naf)
    code = _code(cert, device, iat=iat, lifetime=lifetime, counter=counter)
    assert code.startswith("YK2:") and set(code) <= set(ALPHABET)
    claims = verify_code(code, lookup, iat, 5)
    assert (claims.face, claims.issuer, claims.region, claims.kid, claims.alg) == (
        "ykm", "ykm", None, issuer.kid, issuer.alg)
    assert (claims.holder, claims.flags, claims.issued_at, claims.lifetime_s) == (
        holder, flags, iat, lifetime)
    assert claims.nonce == serial + counter.to_bytes(4, "big")
    assert claims.holder_iv == serial
    assert claims.device is not None
    assert (claims.device.serial, claims.device.counter, claims.device.alg,
            claims.device.not_before, claims.device.not_after) == (
        serial, counter, device.alg, nbf, naf)
    assert decode(code).claims == claims


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fits_qr_version_11_at_ecc_m_and_reads_back_with_zxing(name: str) -> None:
    """Measured (docs/code-format.md §10.5): 324/325 characters → version 11 at ECC M, one
    alphanumeric segment; an independent decoder (zxing-cpp) reads the PNG back exactly."""
    import qrcode.constants
    import qrcode.util

    from gateway.qr import BORDER, BOX_SIZE, _build, render_png
    from loadtests.flows import read_qr_png

    code = SAMPLES[name]
    assert len(code) in (324, 325)
    qr = _build(code)
    assert [d.mode for d in qr.data_list] == [qrcode.util.MODE_ALPHA_NUM]
    assert qr.error_correction == qrcode.constants.ERROR_CORRECT_M
    assert qr_version(code) == 11
    png_bytes = render_png(code)
    assert read_qr_png(png_bytes) == [code]
    import png

    width, _, _, _ = png.Reader(bytes=png_bytes).asDirect()
    assert width == (17 + 4 * 11 + 2 * BORDER) * BOX_SIZE


# --- tamper resistance ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_byte_flip_of_the_binary_is_rejected(name: str) -> None:
    code = SAMPLES[name]
    raw = b45decode(code[4:])
    assert _reason(code) == "ok"
    for i in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            forged = "YK2:" + b45encode(raw[:i] + bytes((raw[i] ^ mask,)) + raw[i + 1:])
            reason = _reason(forged)
            assert reason in REJECTED, (name, i, mask, reason)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(SAMPLES)))
def test_any_byte_change_is_rejected(data: st.DataObject, name: str) -> None:
    raw = b45decode(SAMPLES[name][4:])
    i = data.draw(st.integers(0, len(raw) - 1))
    v = data.draw(st.integers(0, 255).filter(lambda v: v != raw[i]))
    assert _reason("YK2:" + b45encode(raw[:i] + bytes((v,)) + raw[i + 1:])) in REJECTED


def test_every_character_change_of_the_string_is_rejected() -> None:
    code = SAMPLES["ed-on-ed"]
    for i in range(len(code)):
        for ch in "0Z:a\x00":
            if ch != code[i]:
                assert _reason(code[:i] + ch + code[i + 1:]) in REJECTED, (i, ch)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_and_extension_is_malformed(name: str) -> None:
    code = SAMPLES[name]
    for n in range(len(code)):
        assert _reason(code[:n]) == "malformed", n
    raw = b45decode(code[4:])
    for n in range(len(raw)):
        assert _reason("YK2:" + b45encode(raw[:n])) == "malformed", n
    for extra in (b"\x00", bytes(2), bytes(64)):
        assert _reason("YK2:" + b45encode(raw + extra)) == "malformed"


@given(st.binary(max_size=260))
def test_random_binary_never_raises_anything_else(raw: bytes) -> None:
    assert _reason("YK2:" + b45encode(raw)) in REJECTED


# --- the chain's reasons (CONTRACT "Codes", issue 18 "Bad input") --------------------------

def test_certificate_by_a_key_not_in_the_trust_list_is_unknown_issuer() -> None:
    assert _reason(_code(_cert(STRANGER))) == "unknown_issuer"


def test_code_signed_by_another_devices_key_is_bad_signature() -> None:
    assert _reason(_code(_cert(device=DEV_ED), DEV_OTHER)) == "bad_signature"


def test_certificate_whose_alg_byte_lies_is_bad_signature() -> None:
    raw = bytearray(b45decode(SAMPLES["ed-on-ed"][4:]))
    raw[1] = 2  # says ES256, signed with Ed25519
    assert _reason("YK2:" + b45encode(bytes(raw))) in {"bad_signature", "unknown_issuer"}


def test_certificate_not_before_is_when_the_issuer_key_must_be_valid() -> None:
    from gateway.codec import VerificationKey

    def windowed(issuer: str, kid: str) -> VerificationKey | None:
        return VerificationKey.of("ykm", YKM_ED.public_key(), not_before=NBF + 1) \
            if kid == YKM_ED.kid else None

    code = _code()
    with pytest.raises(CodeError) as e:
        verify_code(code, windowed, IAT, 5)
    assert e.value.reason == "unknown_issuer"


def test_certificate_window_against_the_code_and_the_clock() -> None:
    skew = 5
    # the code's timestamp inside the window, both edges with the skew
    assert _reason(_code(iat=NBF - skew), now=NBF - skew) == "ok"
    assert _reason(_code(iat=NBF - skew - 1), now=NBF) == "not_yet_valid"
    assert _reason(_code(iat=NAF + skew), now=NAF + skew) == "ok"
    assert _reason(_code(iat=NAF + skew + 1), now=NAF + skew) == "expired"
    # a fresh-looking code, but the gate's clock is past the certificate
    assert _reason(_code(iat=NAF, lifetime=60), now=NAF + skew + 1) == "expired"
    assert _reason(_code(iat=NBF - skew, lifetime=60), now=NBF - skew - 1) == "not_yet_valid"


@given(iat=st.integers(NBF + 10, NAF - 100), lifetime=st.integers(1, 60),
       skew=st.integers(0, 30))
@settings(max_examples=50, deadline=None)
def test_code_window_from_its_own_timestamp(iat: int, lifetime: int, skew: int) -> None:
    code = _code(iat=iat, lifetime=lifetime)
    assert _reason(code, iat - skew, skew) == "ok"
    assert _reason(code, iat - skew - 1, skew) == "not_yet_valid"
    assert _reason(code, iat + lifetime + skew, skew) == "ok"
    assert _reason(code, iat + lifetime + skew + 1, skew) == "expired"


def test_prefix_and_certificate_label_are_signed_domain_separation() -> None:
    # the device signature covers "YK2:", the issuer signature covers "YKDC1:"
    raw = b45decode(SAMPLES["ed-on-ed"][4:])
    cert = parse_certificate(raw[:140])
    assert cert.signed.startswith(b"YKDC1:")
    yk1_style = YKM_ED.sign(b"YK1:" + cert.raw[:-64])
    assert yk1_style != cert.signature


def test_counter_and_serial_make_the_single_use_key() -> None:
    a = decode(_code(counter=1)).claims
    b = decode(_code(counter=2)).claims
    c = decode(_code(_cert(serial=b"\x01" * 12), counter=1)).claims
    assert len({a.nonce, b.nonce, c.nonce}) == 3


# --- encoder refusals and extensibility -------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {"serial": bytes(11)}, {"holder": bytes(15)}, {"flags": 256}, {"nbf": NBF, "naf": NBF},
    {"nbf": NBF, "naf": NBF + MAX_CERT_TTL_S + 1}, {"nbf": -1, "naf": 10},
])
def test_encode_certificate_refuses_bad_fields(kw: dict[str, object]) -> None:
    with pytest.raises(CodeError):
        _cert(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{"lifetime": 0}, {"lifetime": 61}, {"counter": -1},
                                {"counter": 2**32}, {"iat": -1}])
def test_encode_yk2_refuses_bad_fields(kw: dict[str, object]) -> None:
    with pytest.raises(CodeError):
        _code(**kw)  # type: ignore[arg-type]


def test_encode_yk2_refuses_a_signer_of_another_algorithm() -> None:
    with pytest.raises(ValueError):
        _code(_cert(device=DEV_ED), DEV_ES)


def test_device_keys_are_checked_at_enrolment() -> None:
    with pytest.raises(ValueError):
        normalise_device_key("RS256", bytes(32))
    with pytest.raises(ValueError):
        normalise_device_key("EdDSA", bytes(31))
    with pytest.raises(ValueError):
        normalise_device_key("ES256", b"\x04" + bytes(64))  # not on the curve
    full = raw_public_key(DEV_ES.public_key())
    assert normalise_device_key("ES256", full) == normalise_device_key("ES256", _key(DEV_ES))
    assert len(normalise_device_key("ES256", full)) == 33


def test_the_device_algorithm_table_is_extensible() -> None:
    with pytest.raises(ValueError):  # ids and names are unique
        register_device_alg(DeviceAlgorithm(1, "X", 32, lambda k: lambda d, s: False, bytes))
    with pytest.raises(ValueError):
        register_device_alg(DeviceAlgorithm(9, "EdDSA", 32, lambda k: lambda d, s: False,
                                            bytes))
    assert {a.name for a in DEVICE_ALGS.values()} >= {"EdDSA", "ES256"}
