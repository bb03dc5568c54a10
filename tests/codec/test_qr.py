"""QR rendering (gateway/qr.py): read back by an independent decoder (zxing-cpp)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import png
import pytest
import qrcode.constants
import qrcode.util
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import encode_essc, encode_ykm
from gateway.qr import BORDER, BOX_SIZE, _build, qr_version, render_png, render_svg
from loadtests.flows import read_qr_png

from .keyring import ESSC_CQ, ESSC_SC, YKM_ED, YKM_ES

IAT = 1_790_000_000


def _ykm(signer: object = YKM_ED, holder: bytes = bytes(range(16))) -> str:
    return encode_ykm(holder=holder, issued_at=IAT, lifetime_s=30,
                      signer=signer)  # type: ignore[arg-type]


def _essc(holder: bytes = b"CQ-ESSC-HOLDER-0001", signer: object = ESSC_CQ,
          region: str = "CQ") -> str:
    return encode_essc(region=region, holder=holder, issued_at=IAT, lifetime_s=30,
                       signer=signer)  # type: ignore[arg-type]


def _read_png(data: bytes) -> list[str]:
    """Decode a PNG with pypng into an 8-bit greyscale buffer and hand it to zxing-cpp."""
    _, _, _, info = png.Reader(bytes=data).asDirect()
    assert info["greyscale"] and not info["alpha"]
    return read_qr_png(data)  # checks one byte per pixel


CODES = {
    "ykm-eddsa": _ykm(YKM_ED),
    "ykm-es256": _ykm(YKM_ES),
    "essc-cq": _essc(),
    "essc-sc-max-holder": _essc(b"\xff" * 24, ESSC_SC, "SC"),
}


@pytest.mark.parametrize("name", sorted(CODES))
def test_png_reads_back_exactly(name: str) -> None:
    code = CODES[name]
    data = render_png(code)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert _read_png(data) == [code]
    width, height, _, _ = png.Reader(bytes=data).asDirect()
    modules = 17 + 4 * qr_version(code)
    assert width == height == (modules + 2 * BORDER) * BOX_SIZE


@settings(max_examples=15, deadline=None)
@given(holder=st.binary(min_size=16, max_size=16))
def test_png_round_trip_property(holder: bytes) -> None:
    code = _ykm(YKM_ED, holder)
    assert _read_png(render_png(code)) == [code]


@pytest.mark.parametrize("name", sorted(CODES))
def test_alphanumeric_mode_and_small_version(name: str) -> None:
    code = CODES[name]
    qr = _build(code)
    assert [d.mode for d in qr.data_list] == [qrcode.util.MODE_ALPHA_NUM]
    assert qr.error_correction == qrcode.constants.ERROR_CORRECT_M
    # Measured (docs/code-format.md §7): ykm 160 chars -> version 7; essc ~194 chars -> 8.
    assert qr_version(code) <= 10
    assert qr_version(code) == (7 if name.startswith("ykm") else 8)


def test_worst_case_essc_fits_version_10() -> None:
    from gateway.codec import Es256Signer

    long_kid = Es256Signer.from_scalar(bytes(31) + b"\x09", kid="k" * 32)
    code = encode_essc(region="SC", holder=b"\xff" * 24, issued_at=2**32 - 1, lifetime_s=60,
                       signer=long_kid)
    assert qr_version(code) <= 10
    assert _read_png(render_png(code)) == [code]


def test_svg_is_one_path_document() -> None:
    svg = render_svg(CODES["ykm-eddsa"])
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("path")]) == 1


@pytest.mark.parametrize("text", ["", "yk1:abc", "YK1:É", "YK1:\n"])
def test_non_alphanumeric_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        render_png(text)
