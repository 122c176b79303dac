"""HL7v2 escape sequences (v2.5+ chapter 2.7): \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\P\\ \\Xhh..\\ and formatting escapes.

Unescaping turns an escaped field value into plain text for FHIR; escaping is its inverse for writing
values back (ACK text, round trips).  Both take the message's own delimiters, never the defaults.
"""

from __future__ import annotations

from .delimiters import Delimiters
from .types import HL7Error

# Formatting escapes of FT/TX fields.  A line break is the only one with a plain-text meaning; the
# others (highlighting, indentation, centring) have no FHIR string equivalent and are dropped.
_LINE_BREAKS = {".br": "\n", ".sp": "\n"}
_DROPPED_PREFIXES = ("H", "N", ".in", ".ti", ".sk", ".ce", ".fi", ".nf", "C", "M", "Z")


def _hex_text(digits: str, where: str) -> str:
    if len(digits) % 2:
        raise HL7Error("102", where, f"escape \\X{digits}\\ has an odd number of hexadecimal digits")
    try:
        data = bytes.fromhex(digits)
    except ValueError as exc:
        raise HL7Error("102", where, f"escape \\X{digits}\\ is not hexadecimal") from exc
    # \X..\ carries bytes of the message's character set; UTF-8 when they form UTF-8, else Latin-1
    # code points (what senders using single-byte sets mean, and what python-hl7 and HAPI read).
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unescape(value: str, delimiters: Delimiters, where: str = "") -> str:
    """Plain text of an escaped value; unknown or unterminated escapes are kept literally."""
    esc = delimiters.escape
    if not esc or esc not in value:
        return value  # the common case costs one scan
    simple = {
        "F": delimiters.field,
        "S": delimiters.component,
        "T": delimiters.subcomponent,
        "R": delimiters.repetition,
        "E": esc,
    }
    if delimiters.truncation:
        simple["P"] = delimiters.truncation
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = value.find(esc, i + 1)
        if end < 0:  # no closing escape character: the rest is literal text
            out.append(value[i:])
            break
        body = value[i + 1 : end]
        if body in simple:
            out.append(simple[body])
        elif body[:1] == "X" and len(body) > 1:
            out.append(_hex_text(body[1:], where))
        elif body in _LINE_BREAKS:
            out.append(_LINE_BREAKS[body])
        elif body and body.startswith(_DROPPED_PREFIXES):
            pass
        else:  # unknown (or empty \X\): keep verbatim rather than lose text
            out.append(value[i : end + 1])
        i = end + 1
    return "".join(out)


def escape(value: str, delimiters: Delimiters, ascii_only: bool = False) -> str:
    """Escaped form of plain text; with ``ascii_only`` non-ASCII characters up to U+00FF become \\Xhh\\."""
    esc = delimiters.escape
    table = {
        esc: f"{esc}E{esc}",
        delimiters.field: f"{esc}F{esc}",
        delimiters.component: f"{esc}S{esc}",
        delimiters.subcomponent: f"{esc}T{esc}",
        delimiters.repetition: f"{esc}R{esc}",
        "\r": f"{esc}X0D{esc}",  # a raw CR or LF would end the segment
        "\n": f"{esc}X0A{esc}",
    }
    if delimiters.truncation:
        table[delimiters.truncation] = f"{esc}P{esc}"
    out: list[str] = []
    for ch in value:
        if ch in table:
            out.append(table[ch])
        elif ascii_only and 0x7F < ord(ch) <= 0xFF:
            out.append(f"{esc}X{ord(ch):02x}{esc}")
        else:
            out.append(ch)
    return "".join(out)
