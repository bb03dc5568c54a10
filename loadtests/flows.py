"""Helpers of the locust flows that need no locust (importing locust monkey-patches the
process with gevent, so tests import these from here)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets


def read_qr_png(data: bytes) -> list[str]:
    """Every QR code in a PNG, read back as a phone camera would: pypng to an 8-bit
    greyscale buffer, then zxing-cpp (an independent decoder). Tests use it too."""
    import png
    import zxingcpp

    width, height, rows, info = png.Reader(bytes=data).asDirect()
    scale = 255 // ((1 << info["bitdepth"]) - 1)
    pixels = bytearray()
    for row in rows:
        pixels.extend(v * scale for v in row)
    if len(pixels) != width * height:
        raise ValueError("not a one-channel (greyscale) PNG")
    view = memoryview(bytes(pixels)).cast("B", (height, width))
    return [b.text for b in zxingcpp.read_barcodes(view,
                                                   formats=zxingcpp.BarcodeFormat.QRCode)]


def _read_qr(data: bytes) -> str:
    """The login page's QR code."""
    found = read_qr_png(data)
    if len(found) != 1:
        raise ValueError("the login page's QR code did not read back")
    return found[0]


def parse_login_page(html: str) -> tuple[str, str, int]:
    """(login session id, QR text, number to match) from the /oauth2/authorize page."""
    sid = re.search(r'data-session="([^"]+)"', html)
    number = re.search(r'id="number">(\d+)<', html)
    img = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    if not (sid and number and img):
        raise ValueError("not a scan-to-login page")
    return sid.group(1), _read_qr(base64.b64decode(img.group(1))), int(number.group(1))


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) — RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
