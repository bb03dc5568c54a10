"""QR rendering of code strings (ISO/IEC 18004), kept outside the pure codec.

ECC level M (~15 % recovery), quiet zone of 4 modules (ISO/IEC 18004 §6.3.8), 6 px per module.
Codes are Base45 + an alphanumeric prefix, so the whole string is one alphanumeric-mode segment
(5.5 bits/char); a string outside that charset is refused rather than silently encoded as bytes.
A URI (the device grant's verification_uri_complete, RFC 8628 §3.3.1) is asked for as bytes
explicitly (`uri=True`: printable ASCII, byte mode).
PNG is written by qrcode's pure-Python PyPNG factory (no Pillow), SVG as a single path.
"""

from __future__ import annotations

import io
from typing import Final

import qrcode
import qrcode.constants
import qrcode.util
from qrcode.image.pure import PyPNGImage
from qrcode.image.svg import SvgPathImage

__all__ = ["BORDER", "BOX_SIZE", "qr_version", "render_png", "render_svg"]

BOX_SIZE: Final = 6
BORDER: Final = 4
_ALNUM: Final = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def _build(code: str, uri: bool = False) -> qrcode.QRCode:
    data = code.encode("ascii", "strict") if code.isascii() else b""
    if uri:
        if not data or not all(0x21 <= b <= 0x7E for b in data):
            raise ValueError("a URI must be non-empty printable ASCII")
    elif not data or not _ALNUM.issuperset(data):
        raise ValueError("a code must be non-empty QR-alphanumeric text")
    qr = qrcode.QRCode(
        version=None,
        error_correction=qrcode.constants.ERROR_CORRECT_M,
        box_size=BOX_SIZE,
        border=BORDER,
    )
    mode = qrcode.util.MODE_8BIT_BYTE if uri else qrcode.util.MODE_ALPHA_NUM
    qr.add_data(qrcode.util.QRData(data, mode=mode), optimize=0)
    qr.make(fit=True)
    return qr


def qr_version(code: str) -> int:
    """The smallest QR version (1-40) that holds ``code`` at ECC level M."""
    version: int = _build(code).version
    return version


def render_png(code: str) -> bytes:
    """The QR symbol for ``code`` as a greyscale PNG."""
    img = _build(code).make_image(image_factory=PyPNGImage)
    buf = io.BytesIO()
    img.save(buf)
    return buf.getvalue()


def render_svg(code: str, *, uri: bool = False) -> bytes:
    """The QR symbol for ``code`` as an SVG document (one ``<path>``), UTF-8; `uri`: a URI
    in byte mode instead of a code."""
    img = _build(code, uri).make_image(image_factory=SvgPathImage)
    out: bytes = img.to_string(encoding="utf-8")
    return out
