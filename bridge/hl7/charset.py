"""Decode raw message bytes by the character set MSH-18 declares (HL7 table 0211)."""

from __future__ import annotations

import codecs

# HL7 table 0211 names -> Python codecs.  Why a table: the names are HL7's own ("8859/1",
# "UNICODE UTF-8", "ISO IR100") and match no IANA label.
CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",  # pre-2.5 senders meant UTF-8 in practice; UCS-2 would not be ASCII-framed
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
    "BIG-5": "big5",
    "CNS 11643-1992": "big5",  # closest Python codec
    "JAS2020": "iso2022-jp",
    "JIS X 0202": "iso2022-jp",
    "ISO IR87": "iso2022-jp",
    "ISO IR159": "iso2022-jp-2",
    "ISO IR13": "shift-jis",
    "ISO IR14": "shift-jis",
}

BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))


def declared_charset(raw: bytes) -> str | None:
    """MSH-18 (first repetition, first component) read from the bytes, before any decoding."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return None
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        pos = raw.find(terminator, start)
        if 0 <= pos < end:
            end = pos
    line = raw[start:end]
    fs = line[3:4]
    fields = line.split(fs)
    if len(fields) < 18:
        return None
    enc = fields[1]
    value = fields[17]
    for sep in enc[1:2], enc[0:1]:  # first repetition, then first component
        if sep:
            value = value.split(sep)[0]
    text = value.decode("ascii", "replace").strip()
    return text or None


def decode(raw: bytes) -> tuple[str, str | None, list[str]]:
    """Text of a message, the charset named in MSH-18, and warnings about what decoding assumed."""
    warnings: list[str] = []
    for bom, codec in BOMS:
        if raw.startswith(bom):
            return raw[len(bom):].decode(codec, "replace"), declared_charset(raw), warnings
    charset = declared_charset(raw)
    codec = CHARSETS.get(charset.upper()) if charset else None
    if charset and codec is None:
        warnings.append(f"MSH-18: character set {charset!r} is not known; read as UTF-8")
    if codec and codec not in ("ascii", "utf-8"):
        try:
            return raw.decode(codec), charset, warnings
        except UnicodeDecodeError:
            warnings.append(f"MSH-18: bytes are not valid {charset}; read as UTF-8")
    try:
        return raw.decode("utf-8"), charset, warnings
    except UnicodeDecodeError:
        # Undeclared (or falsely "ASCII") 8-bit text is Latin-1/Windows-1252 in practice; every byte
        # maps, so a message is never lost to decoding.
        warnings.append("MSH-18: bytes are not UTF-8; read as Latin-1")
        return raw.decode("latin-1"), charset, warnings
