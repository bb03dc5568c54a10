"""The registry of code formats, keyed by prefix (docs/code-format.md §2).

A code string is ``<prefix><Base45 payload>``; the prefix runs up to and including the first
``:``. Base45 also uses ``:``, which is why no prefix contains one before its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Protocol

from .claims import DecodedCode, Face
from .errors import CodeError
from .essc import EsscFormat
from .yk2 import Yk2Format
from .ykm import YkmFormat

__all__ = ["FORMATS", "MAX_CODE_LEN", "CodeFormat", "decode", "trim_scan"]

#: No registered format produces longer strings; longer input is malformed without parsing.
MAX_CODE_LEN: Final = 512


class CodeFormat(Protocol):
    """One code format: its prefix, its face and a strict decoder (no signature check)."""

    @property
    def prefix(self) -> str: ...

    @property
    def face(self) -> Face: ...

    def decode(self, code: str) -> DecodedCode: ...


FORMATS: Final[Mapping[str, CodeFormat]] = MappingProxyType(
    {f.prefix: f for f in (YkmFormat(), EsscFormat(), Yk2Format())}
)


def trim_scan(text: str) -> str:
    """A scanner's line ending removed: ONE trailing ``CR LF``, ``LF`` or ``CR`` (keyboard-wedge
    scanners append one). Nothing else is trimmed: a space is a Base45 character, and any other
    stray character makes the code ``malformed`` (docs/code-format.md §2)."""
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith(("\n", "\r")):
        return text[:-1]
    return text


def decode(code: str) -> DecodedCode:
    """Parse ``code`` by its prefix; anything not a well-formed code is ``CodeError("malformed")``.

    A scanner's trailing line ending is removed first (:func:`trim_scan`), online and offline
    alike. The signature is NOT checked here: use :func:`gateway.codec.verify.verify_code`.
    """
    if not isinstance(code, str):
        raise CodeError("malformed")
    code = trim_scan(code)
    if len(code) > MAX_CODE_LEN:
        raise CodeError("malformed")
    end = code.find(":")
    fmt = FORMATS.get(code[: end + 1]) if end > 0 else None
    if fmt is None:
        raise CodeError("malformed")
    return fmt.decode(code)
