"""JWS with SM2 (``"alg": "SM2"``) for PyJWT: access and ID tokens, consent receipts.

No JOSE registry entry names SM2 yet; this gateway's name is ``SM2`` (docs/oidc.md
"Algorithms"): the signature is SM2 with SM3 (GB/T 32918.2, GB/T 32905) over the JWS signing
input ``ASCII(BASE64URL(header) || "." || BASE64URL(payload))`` with the default
distinguishing identifier ``1234567812345678`` (GM/T 0009), encoded as raw ``r || s`` (64
bytes) like ES256 (RFC 7518 §3.4). The key is a JWK ``{"kty": "EC", "crv": "SM2", "x", "y"}``.

The algorithm is registered with PyJWT's module-level object once, on import; it is used only
where a caller lists ``"SM2"`` in ``algorithms`` (PyJWT never infers an algorithm).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
from jwt.algorithms import Algorithm

from gateway.codec.sm2 import Sm2PrivateKey, Sm2PublicKey

__all__ = ["ALG", "Sm2JwsAlgorithm", "register"]

ALG = "SM2"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sm2JwsAlgorithm(Algorithm):
    """PyJWT's Algorithm interface over :mod:`gateway.codec.sm2`."""

    def prepare_key(self, key: Any) -> Sm2PrivateKey | Sm2PublicKey:
        if isinstance(key, (Sm2PrivateKey, Sm2PublicKey)):
            return key
        raise jwt.InvalidKeyError("an SM2 key object is required")

    def sign(self, msg: bytes, key: Any) -> bytes:
        if not isinstance(key, Sm2PrivateKey):
            raise jwt.InvalidKeyError("signing needs an SM2 private key")
        return key.sign(msg)

    def verify(self, msg: bytes, key: Any, sig: bytes) -> bool:
        if isinstance(key, Sm2PrivateKey):
            key = key.public_key()
        if not isinstance(key, Sm2PublicKey):
            return False
        return key.verify(sig, msg)

    @staticmethod
    def to_jwk(key_obj: Any, as_dict: bool = False) -> Any:
        pub = key_obj.public_key() if isinstance(key_obj, Sm2PrivateKey) else key_obj
        if not isinstance(pub, Sm2PublicKey):
            raise jwt.InvalidKeyError("not an SM2 key")
        jwk = {"kty": "EC", "crv": "SM2", "x": _b64u(pub.point[1:33]),
               "y": _b64u(pub.point[33:])}
        return jwk if as_dict else json.dumps(jwk)

    @staticmethod
    def from_jwk(jwk: Any) -> Sm2PublicKey:
        obj = json.loads(jwk) if isinstance(jwk, str) else jwk
        if not isinstance(obj, dict) or obj.get("kty") != "EC" or obj.get("crv") != "SM2":
            raise jwt.InvalidKeyError("not an SM2 JWK")
        try:
            x, y = _unb64u(obj["x"]), _unb64u(obj["y"])
            if len(x) != 32 or len(y) != 32:
                raise ValueError
            return Sm2PublicKey(b"\x04" + x + y)
        except (KeyError, TypeError, ValueError):
            raise jwt.InvalidKeyError("bad SM2 JWK") from None


def register() -> None:
    """Make ``"SM2"`` known to PyJWT (idempotent)."""
    try:
        jwt.register_algorithm(ALG, Sm2JwsAlgorithm())
    except ValueError:  # already registered
        pass


register()
