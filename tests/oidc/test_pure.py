"""Pure OIDC logic: PKCE S256 (RFC 7636 Appendix B vector + properties), the QR payload and
refresh-token formats, at_hash, the login context labels."""

from __future__ import annotations

import base64
import hashlib

import jwt
from hypothesis import given
from hypothesis import strategies as st

from gateway.authz import oidc
from gateway.authz.pkce import is_valid_verifier, s256, verify_s256
from gateway.qr import qr_version

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
verifiers = st.text(alphabet=UNRESERVED, min_size=43, max_size=128)


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert verify_s256(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")


@given(verifiers, verifiers)
def test_s256_accepts_only_its_own_verifier(v: str, other: str) -> None:
    assert verify_s256(v, s256(v))
    assert verify_s256(other, s256(v)) == (other == v)
    assert not verify_s256(v, v[:43]) or s256(v) == v[:43]   # `plain` never passes


@given(st.text(max_size=200))
def test_malformed_verifiers_never_pass(v: str) -> None:
    if not is_valid_verifier(v):
        assert not verify_s256(v, s256("a" * 43))


def test_missing_verifier_fails() -> None:
    assert not verify_s256(None, s256("a" * 43))


@given(st.integers(0, 1000))
def test_qr_payload_round_trips_and_is_qr_alphanumeric(_: int) -> None:
    sid, secret = oidc.new_id(), oidc.new_scan_secret()
    payload = oidc.qr_payload(oidc.session_id_to_qr(sid), secret)
    assert oidc.parse_qr(payload) == (sid, secret)
    assert qr_version(payload) <= 6          # small enough to scan from a screen
    assert oidc.parse_qr(payload.lower()) is None
    assert oidc.parse_qr(payload + "A") is None


@given(st.text(max_size=120))
def test_parse_qr_never_crashes(junk: str) -> None:
    oidc.parse_qr(junk)
    oidc.parse_qr(oidc.QR_PREFIX + junk)


def test_refresh_token_format_is_never_a_jwt() -> None:
    token, h = oidc.new_refresh_token(oidc.new_id())
    fam, secret = oidc.split_refresh_token(token) or ("", "")
    assert oidc.digest(secret) == h and token.startswith(fam + ".")
    a_jwt = jwt.encode({"a": 1}, "k" * 32, algorithm="HS256")
    assert oidc.split_refresh_token(a_jwt) is None


def test_at_hash_follows_oidc_core() -> None:
    at = "jHkWEdUXMU1BwAsC4vtUsZwnNqQ"
    digest = hashlib.sha256(at.encode()).digest()[:16]
    assert oidc.left_hash(at, "ES256") == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert len(oidc.left_hash(at, "EdDSA")) == 43      # SHA-512 left half: 32 bytes


def test_number_choices_hold_the_number_once() -> None:
    for _ in range(200):
        n = oidc.new_number()
        choices = oidc.number_choices(n)
        assert 10 <= n <= 99 and choices.count(n) == 1 and len(set(choices)) == 3


def test_context_labels() -> None:
    ua = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
    assert oidc.describe_browser(ua) == "Chrome 120 on Windows"
    assert oidc.describe_browser(ua + " Edg/120.0") == "Edge 120 on Windows"
    assert oidc.describe_browser(None) == "Unknown browser"
    assert oidc.describe_place("127.0.0.1") == "127.0.0.1 (loopback)"
    assert oidc.describe_place("10.1.2.3") == "10.1.2.3 (private network)"
    assert oidc.describe_place("not an ip") == "unknown network"
